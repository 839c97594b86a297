// What each CPUID register means to a CPU pool: the rule a baseline applies
// to it, the bits that never pass to a guest, and the names of feature bits.
//
// The table is the reviewed one in docs/design/cpu-pool.md; cpu_baseline.h
// and cpu_compat.h are built on it:
//
//   for (const CpuidRegisterRule& r : CpuidRules()) ...
//   std::string n = FeatureName(7, 0, CpuidRegister::kEbx, 16);  // "avx512f"
#ifndef VCPU_CPU_FEATURES_H_
#define VCPU_CPU_FEATURES_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "vcpu/cpu_template.h"

namespace vcpu {

enum class PoolRule {
  kAnd,     // feature bits: a bit passes if every host has it
  kMin,     // value fields (`fields` below): the smallest over the hosts
  kKeep,    // identity or per-vCPU data (vendor, family, topology): untouched
  kSame,    // kept if identical on every host, otherwise zeroed
  kHide,    // never shown: zeroed on every host
  kXsave,   // leaf 0xD subleaf >= 2: kept if its component is in the baseline
};

// A value field of a kMin register: `width` bits from `shift`.
struct RegisterField {
  int shift;
  int width;
  const char* name;
};

struct CpuidRegisterRule {
  uint32_t leaf;
  std::optional<uint32_t> subleaf;  // nullopt: every subleaf
  CpuidRegister reg;
  PoolRule rule;
  // kAnd: bits a guest never gets (cannot migrate, host-specific).
  uint32_t hidden = 0;
  // kAnd: bits the guest OS or the VMM sets (OSXSAVE, OSPKE, hypervisor):
  // not templated, not compared.
  uint32_t dynamic = 0;
  // kMin: the fields (one field of width 32 when empty).
  std::span<const RegisterField> fields = {};
};

// The rule for (leaf, subleaf, reg). Leaves not in the table are kSame.
CpuidRegisterRule RuleFor(uint32_t leaf, uint32_t subleaf, CpuidRegister reg);
// Every explicit rule, for the design note and the tests.
std::span<const CpuidRegisterRule> CpuidRules();

// The feature's lower-case name as Linux's /proc/cpuinfo spells it
// ("avx512f", "lahf_lm", "lzcnt/abm"); "" if the bit has no name here.
std::string FeatureName(uint32_t leaf, uint32_t subleaf, CpuidRegister reg, int bit);
// "avx512f (leaf 0x7 ebx bit 16)", or "leaf 0x7 ebx bit 3" for a bit
// without a name.
std::string DescribeBit(uint32_t leaf, uint32_t subleaf, CpuidRegister reg, int bit);
const char* RegisterName(CpuidRegister reg);

// Feature bits of (leaf, subleaf, reg) that need one of the XSAVE state
// components in `components` (bit n = component n: AVX 2, MPX 3-4,
// AVX-512 5-7, PKRU 9, AMX 17-18). A pool that drops a component (its
// hosts lay it out differently) hides these too.
uint32_t FeaturesNeedingXsave(uint64_t components, uint32_t leaf, uint32_t subleaf,
                              CpuidRegister reg);
// "xsave_zmm_hi256 (xsave component 6)".
std::string DescribeXsaveComponent(int component);

// Leaf 0x80000001 EDX bits AMD copies from leaf 1 EDX (FPU, VME, ... ,
// FXSR). Intel leaves them clear; a pool treats each as its leaf-1 twin.
inline constexpr uint32_t kAmdLeaf1EdxMirror = 0x0183f3ff;
// The TSC bits whose rule depends on the hosts' TSCs, not only on CPUID.
inline constexpr uint32_t kInvariantTscBit = 1u << 8;   // 0x80000007 EDX
inline constexpr uint32_t kTscDeadlineBit = 1u << 24;   // leaf 1 ECX

}  // namespace vcpu

#endif  // VCPU_CPU_FEATURES_H_
