#include "vcpu/cpuid.h"

#include <asm/kvm_para.h>

#include <bit>

namespace vcpu {
namespace {

template <typename Table, typename Entry>
Entry* Find(Table& table, uint32_t leaf, uint32_t subleaf) {
  for (auto& e : table) {
    if (e.function != leaf) continue;
    if (!(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e.index == subleaf) {
      return &e;
    }
  }
  return nullptr;
}

struct PvBit {
  bool PvFeatures::*field;
  const char* name;
  uint32_t mask;
};

constexpr uint32_t Bit(int n) { return 1u << n; }

const PvBit kPvBits[] = {
    {&PvFeatures::kvmclock, "kvmclock",
     Bit(KVM_FEATURE_CLOCKSOURCE) | Bit(KVM_FEATURE_CLOCKSOURCE2) |
         Bit(KVM_FEATURE_CLOCKSOURCE_STABLE_BIT)},
    {&PvFeatures::steal_time, "steal-time", Bit(KVM_FEATURE_STEAL_TIME)},
    {&PvFeatures::pv_unhalt, "pv-unhalt", Bit(KVM_FEATURE_PV_UNHALT)},
    {&PvFeatures::pv_tlb_flush, "pv-tlb-flush", Bit(KVM_FEATURE_PV_TLB_FLUSH)},
    {&PvFeatures::pv_send_ipi, "pv-send-ipi", Bit(KVM_FEATURE_PV_SEND_IPI)},
    {&PvFeatures::pv_eoi, "pv-eoi", Bit(KVM_FEATURE_PV_EOI)},
};

// Entries of leaf `leaf` (all subleaves).
template <typename Fn>
void ForEachSubleaf(CpuidTable& table, uint32_t leaf, Fn fn) {
  for (auto& e : table) {
    if (e.function == leaf) fn(e);
  }
}

}  // namespace

kvm_cpuid_entry2* FindCpuid(CpuidTable& table, uint32_t leaf,
                            uint32_t subleaf) {
  return Find<CpuidTable, kvm_cpuid_entry2>(table, leaf, subleaf);
}

const kvm_cpuid_entry2* FindCpuid(const CpuidTable& table, uint32_t leaf,
                                  uint32_t subleaf) {
  return Find<const CpuidTable, const kvm_cpuid_entry2>(table, leaf, subleaf);
}

void ApplyPvFeatures(CpuidTable& table, const PvFeatures& features) {
  kvm_cpuid_entry2* e = FindCpuid(table, kKvmFeaturesLeaf);
  if (e == nullptr) return;
  for (const PvBit& b : kPvBits) {
    if (!(features.*b.field)) e->eax &= ~b.mask;
  }
}

std::vector<std::string> MissingPvFeatures(const CpuidTable& table,
                                           const PvFeatures& features) {
  std::vector<std::string> missing;
  const kvm_cpuid_entry2* e = FindCpuid(table, kKvmFeaturesLeaf);
  for (const PvBit& b : kPvBits) {
    if (!(features.*b.field)) continue;
    if (e == nullptr || (e->eax & b.mask) == 0) missing.push_back(b.name);
  }
  return missing;
}

void SetTopology(CpuidTable& table, uint32_t index, uint32_t count) {
  const uint32_t apic_id = index;
  // Bits of APIC ID that number the cores of the (single) package.
  const uint32_t core_bits =
      count <= 1 ? 0 : 32 - std::countl_zero(count - 1);
  if (kvm_cpuid_entry2* e = FindCpuid(table, 0x1)) {
    e->ebx = (e->ebx & 0x0000ffff) | (apic_id << 24) |
             ((std::min<uint32_t>(count, 255)) << 16);
    if (count > 1) e->edx |= 1u << 28;  // HTT: more than one logical CPU
    e->ecx |= 1u << 31;                 // running under a hypervisor
  }
  // Extended topology: level 0 = SMT (1 thread), level 1 = core.
  for (uint32_t leaf : {0xBu, 0x1Fu}) {
    ForEachSubleaf(table, leaf, [&](kvm_cpuid_entry2& e) {
      e.edx = apic_id;
      if (e.index == 0) {
        e.eax = 0;
        e.ebx = 1;
        e.ecx = (1u << 8) | 0;
      } else if (e.index == 1) {
        e.eax = core_bits;
        e.ebx = count;
        e.ecx = (2u << 8) | 1;
      } else {
        e.eax = e.ebx = 0;
        e.ecx = e.index;  // invalid level
      }
    });
  }
  if (kvm_cpuid_entry2* e = FindCpuid(table, 0x8000001E)) {
    e->eax = apic_id;
    e->ebx = (e->ebx & ~0xffu) | apic_id;  // compute unit id
    e->ecx = 0;                            // one node
  }
  // Leaf 4 (Intel): cores per package in EAX[31:26].
  ForEachSubleaf(table, 0x4, [&](kvm_cpuid_entry2& e) {
    if ((e.eax & 0x1f) == 0) return;  // no cache at this subleaf
    uint32_t cores_minus_1 = (1u << core_bits) - 1;
    e.eax = (e.eax & 0x03ffffff) | (std::min(cores_minus_1, 63u) << 26);
  });
}

}  // namespace vcpu
