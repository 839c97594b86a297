// The complete architectural state of one x86-64 vCPU, for snapshots and
// migration: registers, segment/control registers, FPU and XSAVE area, XCRs,
// debug registers, MSRs (kvmclock, PV-EOI and APIC base among them), the
// LAPIC, pending events and the MP state.
//
//   ASSIGN_OR_RETURN(VcpuState st, SaveVcpuState(vcpu, msr_indices));
//   ... new VM, same memory contents, same CPUID ...
//   RETURN_IF_ERROR(RestoreVcpuState(new_vcpu, st));
#ifndef VCPU_VCPU_STATE_H_
#define VCPU_VCPU_STATE_H_

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "vcpu/kvm.h"

namespace vcpu {

struct VcpuState {
  kvm_regs regs;
  kvm_sregs sregs;
  kvm_fpu fpu;
  std::vector<uint8_t> xsave;
  kvm_xcrs xcrs;
  kvm_debugregs debugregs;
  std::vector<kvm_msr_entry> msrs;
  kvm_lapic_state lapic;
  kvm_vcpu_events events;
  kvm_mp_state mp_state;
};

// MSRs worth saving: KVM's list minus the ones it cannot read back.
absl::StatusOr<std::vector<uint32_t>> SavableMsrs(const Kvm& kvm);

// The vCPU must not be running (pause it first).
absl::StatusOr<VcpuState> SaveVcpuState(Vcpu& vcpu,
                                        const std::vector<uint32_t>& msrs);
// The vCPU must already have its CPUID set.
absl::Status RestoreVcpuState(Vcpu& vcpu, const VcpuState& state);

}  // namespace vcpu

#endif  // VCPU_VCPU_STATE_H_
