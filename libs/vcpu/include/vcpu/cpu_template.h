// CPU templates in Firecracker's custom CPU template JSON format.
//
// A template masks what the guest sees on top of what KVM supports:
//
//   {"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0,
//      "modifiers": [{"register": "ecx", "bitmap": "0bxxxx0xxxxxxxxxxx"}]}],
//    "msr_modifiers": [{"addr": "0x10a", "bitmap": "0b0"}]}
//
// Each bitmap is `0b` then up to 32 (CPUID) or 64 (MSR) characters of 0, 1
// or x (keep), most significant first; `_` separates groups; a short bitmap
// is padded with x on the left. Applying a modifier sets
// value = (value & ~mask) | bits.
//
//   ASSIGN_OR_RETURN(CpuTemplate t, ParseCpuTemplateJson(text));
//   RETURN_IF_ERROR(ApplyCpuTemplate(table, t));  // unknown leaf -> error
#ifndef VCPU_CPU_TEMPLATE_H_
#define VCPU_CPU_TEMPLATE_H_

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "vcpu/cpuid.h"

namespace vcpu {

enum class CpuidRegister { kEax, kEbx, kEcx, kEdx };

// Bits to force: within `mask`, the value's bits become `bits`.
struct BitmapModifier {
  uint64_t mask = 0;
  uint64_t bits = 0;
  uint64_t Apply(uint64_t v) const { return (v & ~mask) | (bits & mask); }
};

// The register `r` of a CPUID entry.
uint32_t& Register(kvm_cpuid_entry2& e, CpuidRegister r);
uint32_t Register(const kvm_cpuid_entry2& e, CpuidRegister r);

struct CpuidRegisterModifier {
  CpuidRegister reg;
  BitmapModifier bitmap;
};

struct CpuidModifier {
  uint32_t leaf = 0;
  uint32_t subleaf = 0;
  uint32_t flags = 0;  // KVM_CPUID_FLAG_* (1 = subleaf is significant)
  std::vector<CpuidRegisterModifier> modifiers;
};

struct MsrModifier {
  uint32_t addr = 0;
  BitmapModifier bitmap;
};

struct CpuTemplate {
  std::vector<CpuidModifier> cpuid_modifiers;
  std::vector<MsrModifier> msr_modifiers;
};

// Parses the JSON text; errors name the JSON path of the bad field.
absl::StatusOr<CpuTemplate> ParseCpuTemplateJson(std::string_view json);
absl::StatusOr<CpuTemplate> LoadCpuTemplateFile(const std::string& path);
// Parses one bitmap string ("0b1x0_x"), `width` = 32 or 64.
absl::StatusOr<BitmapModifier> ParseBitmap(std::string_view text, int width);

// Applies the CPUID modifiers; a leaf/subleaf not in `table` is an error.
absl::Status ApplyCpuTemplate(CpuidTable& table, const CpuTemplate& tmpl);
// Applies the MSR modifiers to `msrs`, adding an entry (from 0) for any MSR
// not yet there. MSRs KVM does not know are an error.
absl::Status ApplyMsrTemplate(std::vector<kvm_msr_entry>& msrs,
                              const CpuTemplate& tmpl,
                              const std::vector<uint32_t>& kvm_msr_list);

}  // namespace vcpu

#endif  // VCPU_CPU_TEMPLATE_H_
