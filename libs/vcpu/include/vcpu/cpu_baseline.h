// A CPU pool's baseline: the Firecracker-format CPU template that leaves a
// guest only what every host of the pool offers, so it can migrate to any
// of them. The rules per CPUID register are in cpu_features.h and
// docs/design/cpu-pool.md.
//
//   std::vector<vcpu::CpuProfile> hosts = ...;  // LoadCpuProfileFile
//   ASSIGN_OR_RETURN(vcpu::Baseline b, vcpu::ComputeBaseline(hosts));
//   std::string json = vcpu::CpuTemplateToJson(b.cpu_template, b.notes);
#ifndef VCPU_CPU_BASELINE_H_
#define VCPU_CPU_BASELINE_H_

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vcpu/cpu_profile.h"
#include "vcpu/cpu_template.h"

namespace vcpu {

inline constexpr size_t kMaxPoolProfiles = 1024;

struct Baseline {
  CpuTemplate cpu_template;
  // What a reader of the template should know: the vendors it spans, the
  // TSC decisions, MSRs left alone.
  std::vector<std::string> notes;
};

// Errors if `profiles` is empty or larger than kMaxPoolProfiles.
absl::StatusOr<Baseline> ComputeBaseline(std::span<const CpuProfile> profiles);

// The template in Firecracker's custom CPU template JSON, with a "comment"
// array holding `notes` (kindling's parser ignores it).
std::string CpuTemplateToJson(const CpuTemplate& tmpl,
                              const std::vector<std::string>& notes = {});

}  // namespace vcpu

#endif  // VCPU_CPU_BASELINE_H_
