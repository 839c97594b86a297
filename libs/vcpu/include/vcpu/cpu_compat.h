// The pre-migration check: can a guest that sees one CPUID run on a host
// whose KVM offers another? A guest must never see a feature disappear, so
// a destination refuses, naming each missing feature, before any memory is
// sent (and before a snapshot taken elsewhere is restored).
//
//   Status s = vcpu::CheckGuestCpuid(guest_cpuid, host_supported, "host-b");
//   // "... avx512f (leaf 0x7 ebx bit 16) is not supported by host host-b"
#ifndef VCPU_CPU_COMPAT_H_
#define VCPU_CPU_COMPAT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "vcpu/cpuid.h"

namespace vcpu {

inline constexpr uint32_t kArchCapabilitiesMsr = 0x10a;

// Each feature bit `guest` shows that `host` lacks, described as
// "avx512f (leaf 0x7 ebx bit 16)", and each address-width or XSAVE-size
// field where the guest needs more than the host offers. Bits the guest OS
// or the VMM sets (OSXSAVE, OSPKE, hypervisor, HTT) are not compared; AMD's
// 0x80000001 EDX copies of leaf-1 bits are satisfied by either.
std::vector<std::string> MissingCpuFeatures(const CpuidTable& guest, const CpuidTable& host);

// Each IA32_ARCH_CAPABILITIES (MSR 0x10a) bit the guest's value has and the
// host's feature MSR lacks ("mds_no (MSR 0x10a bit 5)"): a guest told it is
// not vulnerable must not land where it is. RSBA and RRSBA (bits 2, 19) say
// the opposite (more mitigation) and are not compared. MSRs other than
// 0x10a, and a host that does not report 0x10a, are not compared.
std::vector<std::string> MissingMsrFeatures(const std::vector<kvm_msr_entry>& guest,
                                            const std::vector<kvm_msr_entry>& host_features);

// FAILED_PRECONDITION naming every missing feature ("... is not supported
// by host <host_name>"), or OK.
absl::Status CheckGuestCpuid(const CpuidTable& guest, const CpuidTable& host,
                             absl::string_view host_name);
// The same for CPUID and feature MSRs together.
absl::Status CheckGuestCpu(const CpuidTable& guest_cpuid,
                           const std::vector<kvm_msr_entry>& guest_msrs,
                           const CpuidTable& host_cpuid,
                           const std::vector<kvm_msr_entry>& host_feature_msrs,
                           absl::string_view host_name);

}  // namespace vcpu

#endif  // VCPU_CPU_COMPAT_H_
