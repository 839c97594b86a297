// Fuzzes the CPU profile JSON parser and everything a pool does with a
// profile it was sent: the baseline, the pre-migration check.
#include <cstdint>
#include <string_view>
#include <vector>

#include "vcpu/cpu_baseline.h"
#include "vcpu/cpu_compat.h"
#include "vcpu/cpu_profile.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto p = vcpu::ParseCpuProfileJson(text);
  if (!p.ok()) return 0;
  std::vector<vcpu::CpuProfile> pool = {*p, *p};
  auto b = vcpu::ComputeBaseline(pool);
  vcpu::CpuidTable table = vcpu::ProfileCpuid(*p);
  if (b.ok()) {
    (void)vcpu::CpuTemplateToJson(b->cpu_template, b->notes);
    (void)vcpu::ApplyCpuTemplate(table, b->cpu_template);
  }
  (void)vcpu::MissingCpuFeatures(vcpu::ProfileCpuid(*p), table);
  (void)vcpu::CpuProfileToJson(*p);
  return 0;
}
