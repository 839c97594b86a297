#include "vcpu/vcpu_state.h"

#include "kindling/status_macros.h"

namespace vcpu {
namespace {

// MSRs KVM lists that are not restored: writing the TSC would make guest
// time jump (kvmclock carries time across), TSX_CTRL is host policy, and
// async page faults are re-armed by the guest itself.
bool SkipMsr(uint32_t index) {
  switch (index) {
    case 0x10:        // IA32_TSC
    case 0x122:       // IA32_TSX_CTRL
    case 0x4b564d02:  // MSR_KVM_ASYNC_PF_EN
    case 0x4b564d06:  // MSR_KVM_ASYNC_PF_INT
    case 0x4b564d07:  // MSR_KVM_ASYNC_PF_ACK
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::StatusOr<std::vector<uint32_t>> SavableMsrs(const Kvm& kvm) {
  ASSIGN_OR_RETURN(std::vector<uint32_t> all, kvm.GetMsrIndexList());
  std::vector<uint32_t> out;
  for (uint32_t i : all) {
    if (!SkipMsr(i)) out.push_back(i);
  }
  return out;
}

absl::StatusOr<VcpuState> SaveVcpuState(Vcpu& vcpu,
                                        const std::vector<uint32_t>& msrs) {
  VcpuState st;
  // The MP state first: it flushes pending LAPIC events into the state.
  ASSIGN_OR_RETURN(st.mp_state, vcpu.GetMpState());
  ASSIGN_OR_RETURN(st.regs, vcpu.GetRegs());
  ASSIGN_OR_RETURN(st.sregs, vcpu.GetSregs());
  ASSIGN_OR_RETURN(st.fpu, vcpu.GetFpu());
  ASSIGN_OR_RETURN(st.xsave, vcpu.GetXsave());
  ASSIGN_OR_RETURN(st.xcrs, vcpu.GetXcrs());
  ASSIGN_OR_RETURN(st.debugregs, vcpu.GetDebugRegs());
  ASSIGN_OR_RETURN(st.lapic, vcpu.GetLapic());
  ASSIGN_OR_RETURN(st.msrs, vcpu.GetMsrs(msrs));
  ASSIGN_OR_RETURN(st.events, vcpu.GetVcpuEvents());
  return st;
}

absl::Status RestoreVcpuState(Vcpu& vcpu, const VcpuState& st) {
  RETURN_IF_ERROR(vcpu.SetMpState(st.mp_state));
  RETURN_IF_ERROR(vcpu.SetRegs(st.regs));
  RETURN_IF_ERROR(vcpu.SetSregs(st.sregs));
  RETURN_IF_ERROR(vcpu.SetXsave(st.xsave));
  RETURN_IF_ERROR(vcpu.SetXcrs(st.xcrs));
  RETURN_IF_ERROR(vcpu.SetDebugRegs(st.debugregs));
  RETURN_IF_ERROR(vcpu.SetLapic(st.lapic));
  RETURN_IF_ERROR(vcpu.SetMsrs(st.msrs));
  RETURN_IF_ERROR(vcpu.SetVcpuEvents(st.events));
  return absl::OkStatus();
}

}  // namespace vcpu
