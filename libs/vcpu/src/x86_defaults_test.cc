// SetPcDefaults on a real vCPU: the LAPIC's LINT0/LINT1, the FPU control
// words and IA32_MISC_ENABLE read back as PC firmware leaves them. Needs
// /dev/kvm (SKIP without).
#include "vcpu/x86_defaults.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "kindling/test_skip.h"

namespace vcpu {
namespace {

uint32_t Lvt(const kvm_lapic_state& lapic, size_t offset) {
  uint32_t reg;
  std::memcpy(&reg, &lapic.regs[offset], 4);
  return reg;
}

TEST_CASE("SetPcDefaults leaves a vCPU as PC firmware would") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  auto kvm = Kvm::Open();
  REQUIRE(kvm.ok());
  auto vm = (*kvm)->CreateVm();
  REQUIRE(vm.ok());
  REQUIRE((*vm)->CreateIrqchip(IrqchipMode::kFull).ok());
  auto v = (*vm)->CreateVcpu(0);
  REQUIRE(v.ok());

  // Start from other values, so that the check sees SetPcDefaults' work
  // rather than KVM's reset state (recent KVMs reset to the same FPU).
  kvm_fpu other = {};
  other.fcw = 0x40;
  other.mxcsr = 0x1f00;
  REQUIRE((**v).SetFpu(other).ok());
  REQUIRE(SetPcDefaults(**v).ok());

  auto lapic = (**v).GetLapic();
  REQUIRE(lapic.ok());
  CHECK((Lvt(*lapic, 0x350) & 0x10700) == 0x700);  // LINT0: ExtINT, unmasked
  CHECK((Lvt(*lapic, 0x360) & 0x10700) == 0x400);  // LINT1: NMI, unmasked
  auto fpu = (**v).GetFpu();
  REQUIRE(fpu.ok());
  CHECK(fpu->fcw == 0x37f);
  // MXCSR as the XSAVE area holds it (legacy region, bytes 24-27): some
  // KVMs (kvm_pvm here) leave kvm_fpu.mxcsr zero on KVM_GET_FPU.
  auto xsave = (**v).GetXsave();
  REQUIRE(xsave.ok());
  REQUIRE(xsave->size() >= 28);
  uint32_t mxcsr;
  std::memcpy(&mxcsr, xsave->data() + 24, 4);
  CHECK(mxcsr == 0x1f80);
  uint32_t index = kMsrIa32MiscEnable;
  auto msrs = (**v).GetMsrs({&index, 1});
  REQUIRE(msrs.ok());
  REQUIRE(msrs->size() == 1);
  CHECK(((*msrs)[0].data & kMiscEnableFastStrings) != 0);
}

}  // namespace
}  // namespace vcpu
