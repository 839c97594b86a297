// CPUID for a vCPU: KVM's supported table, per-vCPU topology, paravirtual
// feature switches and CPU templates.
//
// The table starts from KVM_GET_SUPPORTED_CPUID, is narrowed to the VM's
// PV features and template, then gets each vCPU's APIC ID:
//
//   ASSIGN_OR_RETURN(CpuidTable table, kvm.GetSupportedCpuid());
//   ApplyPvFeatures(table, PvFeatures{.pv_eoi = false});
//   RETURN_IF_ERROR(ApplyCpuTemplate(table, tmpl));
//   for (uint32_t i = 0; i < n; ++i) {
//     CpuidTable t = table;
//     SetTopology(t, i, n);
//     RETURN_IF_ERROR(vcpus[i]->SetCpuid(t));
//   }
#ifndef VCPU_CPUID_H_
#define VCPU_CPUID_H_

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vcpu {

class Kvm;
using CpuidTable = std::vector<kvm_cpuid_entry2>;

inline constexpr uint32_t kKvmSignatureLeaf = 0x40000000;
inline constexpr uint32_t kKvmFeaturesLeaf = 0x40000001;

// Returns the entry for (leaf, subleaf), or nullptr. Entries without
// KVM_CPUID_FLAG_SIGNIFCANT_INDEX match any subleaf.
kvm_cpuid_entry2* FindCpuid(CpuidTable& table, uint32_t leaf,
                            uint32_t subleaf = 0);
const kvm_cpuid_entry2* FindCpuid(const CpuidTable& table, uint32_t leaf,
                                  uint32_t subleaf = 0);

// Per-VM switches for KVM's paravirtual features (leaf 0x40000001 EAX).
// A switch that is on only keeps the feature if KVM offers it.
struct PvFeatures {
  bool kvmclock = true;      // CLOCKSOURCE, CLOCKSOURCE2, STABLE_BIT
  bool steal_time = true;    // STEAL_TIME
  bool pv_unhalt = true;     // PV_UNHALT
  bool pv_tlb_flush = true;  // PV_TLB_FLUSH
  bool pv_send_ipi = true;   // PV_SEND_IPI
  bool pv_eoi = true;        // PV_EOI: one exit per interrupt instead of two
};

// Clears the leaf-0x40000001 bits of every feature that is switched off.
void ApplyPvFeatures(CpuidTable& table, const PvFeatures& features);
// Names of features switched on that the table does not offer.
std::vector<std::string> MissingPvFeatures(const CpuidTable& table,
                                           const PvFeatures& features);

// What a guest on this host is given: a throwaway vCPU's CPUID
// (KVM_GET_CPUID2) after KVM_SET_CPUID2 with KVM_GET_SUPPORTED_CPUID. On
// hardware KVM that is the supported table with KVM's own fix-ups; on
// kvm_pvm it also holds the outer CPU's leaf 1/7 bits, which its guests see
// whatever the VMM sets. What a host offers to an incoming guest.
absl::StatusOr<CpuidTable> GuestVisibleCpuid(const Kvm& kvm);

// Sets vCPU `index`'s APIC ID (= index) in leaves 0x1, 0xB, 0x1F and
// 0x8000001E, the logical-processor counts for `count` vCPUs (one core
// each, one socket) and the hypervisor-present bit.
void SetTopology(CpuidTable& table, uint32_t index, uint32_t count);

}  // namespace vcpu

#endif  // VCPU_CPUID_H_
