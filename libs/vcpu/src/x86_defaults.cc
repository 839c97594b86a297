#include "vcpu/x86_defaults.h"

#include <cstring>

#include "kindling/status_macros.h"

namespace vcpu {
namespace {

constexpr size_t kLvtLint0 = 0x350;
constexpr size_t kLvtLint1 = 0x360;
constexpr uint32_t kDeliveryExtInt = 0x7;
constexpr uint32_t kDeliveryNmi = 0x4;

// Sets the delivery mode (bits 8-10) and clears the mask (bit 16).
void SetLvt(kvm_lapic_state& lapic, size_t offset, uint32_t mode) {
  uint32_t reg;
  std::memcpy(&reg, &lapic.regs[offset], 4);
  reg = (reg & ~0x700u & ~(1u << 16)) | (mode << 8);
  std::memcpy(&lapic.regs[offset], &reg, 4);
}

}  // namespace

std::vector<kvm_msr_entry> DefaultMsrs() {
  std::vector<kvm_msr_entry> msrs(1);
  msrs[0].index = kMsrIa32MiscEnable;
  msrs[0].data = kMiscEnableFastStrings;
  return msrs;
}

absl::Status SetLocalInterrupts(Vcpu& v) {
  ASSIGN_OR_RETURN(kvm_lapic_state lapic, v.GetLapic());
  SetLvt(lapic, kLvtLint0, kDeliveryExtInt);
  SetLvt(lapic, kLvtLint1, kDeliveryNmi);
  return v.SetLapic(lapic);
}

absl::Status SetDefaultFpu(Vcpu& v) {
  kvm_fpu fpu = {};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  return v.SetFpu(fpu);
}

absl::Status SetPcDefaults(Vcpu& v) {
  RETURN_IF_ERROR(v.SetMsrs(DefaultMsrs()));
  RETURN_IF_ERROR(SetLocalInterrupts(v));
  return SetDefaultFpu(v);
}

}  // namespace vcpu
