// The state PC firmware leaves an x86 vCPU in, which KVM's reset state
// lacks and every VMM that boots Linux or a PVH kernel directly must set:
//
//   ASSIGN_OR_RETURN(auto v, vm->CreateVcpu(i));
//   RETURN_IF_ERROR(v->SetCpuid(table));
//   std::vector<kvm_msr_entry> msrs = vcpu::DefaultMsrs();
//   RETURN_IF_ERROR(v->SetMsrs(msrs));   // after ApplyMsrTemplate, if any
//   RETURN_IF_ERROR(vcpu::SetLocalInterrupts(*v));
//   RETURN_IF_ERROR(vcpu::SetDefaultFpu(*v));
#ifndef VCPU_X86_DEFAULTS_H_
#define VCPU_X86_DEFAULTS_H_

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "vcpu/kvm.h"

namespace vcpu {

inline constexpr uint32_t kMsrIa32MiscEnable = 0x1a0;
inline constexpr uint64_t kMiscEnableFastStrings = 1;

// IA32_MISC_ENABLE with fast strings on (as firmware sets it; Linux reads
// it at boot).
std::vector<kvm_msr_entry> DefaultMsrs();

// LAPIC LVT LINT0 delivers the 8259's ExtINT and LINT1 delivers NMI, as
// PC firmware programs them; KVM's reset state leaves both masked, and a
// guest that relies on the BIOS's setting (the PIC's timer through LINT0)
// would never see an interrupt.
absl::Status SetLocalInterrupts(Vcpu& v);

// x87 control word 0x37f and MXCSR 0x1f80 (FNINIT / power-on values); KVM
// starts both at zero, which unmasks every floating-point exception.
absl::Status SetDefaultFpu(Vcpu& v);

// All three, in order: what a VMM calls once per vCPU after SetCpuid.
absl::Status SetPcDefaults(Vcpu& v);

}  // namespace vcpu

#endif  // VCPU_X86_DEFAULTS_H_
