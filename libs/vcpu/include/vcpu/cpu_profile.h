// Host CPU profiles: what KVM on one host offers a guest (the CPUID KVM
// supports, its feature MSRs, XSAVE sizes, address bits, the TSC), as the
// kindling.vcpu.v1.CpuProfile message, read and written as JSON.
//
//   ASSIGN_OR_RETURN(auto kvm, vcpu::Kvm::Open());
//   ASSIGN_OR_RETURN(vcpu::CpuProfile p, vcpu::CollectCpuProfile(*kvm, "host-a"));
//   std::string json = vcpu::CpuProfileToJson(p);
//   ASSIGN_OR_RETURN(vcpu::CpuProfile q, vcpu::ParseCpuProfileJson(json));
//
// The CPUID table is the truth: a profile's summary fields (vendor, family,
// XSAVE sizes, address bits) are recomputed from it whenever one is read.
#ifndef VCPU_CPU_PROFILE_H_
#define VCPU_CPU_PROFILE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "vcpu/cpu_compat.h"
#include "vcpu/cpu_profile.pb.h"
#include "vcpu/cpuid.h"
#include "vcpu/kvm.h"

namespace vcpu {

using CpuProfile = ::kindling::vcpu::v1::CpuProfile;

inline constexpr uint32_t kCpuProfileFormat = 1;
// Bounds on what a profile file may hold.
inline constexpr size_t kMaxProfileBytes = 4 << 20;
inline constexpr int kMaxProfileCpuidEntries = 1024;
inline constexpr int kMaxProfileMsrs = 256;

// This host's profile: KVM_GET_SUPPORTED_CPUID, the feature MSRs (less the
// VMX capability MSRs), a fresh vCPU's TSC frequency and TSC scaling.
absl::StatusOr<CpuProfile> CollectCpuProfile(const Kvm& kvm, const std::string& host);
// A profile of `cpuid` alone (tests, and a host restricted by hand).
CpuProfile ProfileFromCpuid(const CpuidTable& cpuid, const std::string& host);

// Sets vendor, family/model/stepping, model_name, XSAVE fields and address
// bits from the CPUID table.
void DeriveProfileSummary(CpuProfile& profile);

std::string CpuProfileToJson(const CpuProfile& profile);
// Parses and checks a profile; errors name the field that is wrong.
absl::StatusOr<CpuProfile> ParseCpuProfileJson(std::string_view json);
absl::StatusOr<CpuProfile> LoadCpuProfileFile(const std::string& path);

// The profile's CPUID as KVM entries (KVM_SET_CPUID2's format).
CpuidTable ProfileCpuid(const CpuProfile& profile);
std::optional<uint64_t> ProfileMsr(const CpuProfile& profile, uint32_t index);

}  // namespace vcpu

#endif  // VCPU_CPU_PROFILE_H_
