// VcpuExit: why KVM_RUN returned, as a std::variant.
//
// Port and MMIO exits borrow the kvm_run page: `data` points into it, and a
// device completing a read writes its answer there before the next Run().
//
//   ASSIGN_OR_RETURN(VcpuExit exit, vcpu.Run());
//   if (auto* io = std::get_if<IoOut>(&exit)) bus.Write(io->port, io->data);
#ifndef VCPU_VCPU_EXIT_H_
#define VCPU_VCPU_EXIT_H_

#include <cstdint>
#include <span>
#include <string>
#include <variant>

namespace vcpu {

struct IoIn {
  uint16_t port;
  std::span<uint8_t> data;  // fill before the next Run()
};
struct IoOut {
  uint16_t port;
  std::span<const uint8_t> data;
};
struct MmioRead {
  uint64_t address;
  std::span<uint8_t> data;  // fill before the next Run()
};
struct MmioWrite {
  uint64_t address;
  std::span<const uint8_t> data;
};
struct Halt {};
// Triple fault or a guest-requested shutdown.
struct Shutdown {};
// KVM_EXIT_SYSTEM_EVENT: type is KVM_SYSTEM_EVENT_{SHUTDOWN,RESET,CRASH}.
struct SystemEvent {
  uint32_t type;
};
// Split irqchip: the guest's LAPIC sent EOI for a level-triggered vector
// that the userspace IOAPIC owns.
struct IoapicEoi {
  uint8_t vector;
};
// KVM_RUN returned EINTR, or immediate_exit was set: the VMM wants control.
struct Interrupted {};
// KVM could not run or emulate the guest. `reason` says what KVM reported.
struct EntryFailure {
  std::string reason;
};

using VcpuExit = std::variant<IoIn, IoOut, MmioRead, MmioWrite, Halt, Shutdown,
                              SystemEvent, IoapicEoi, Interrupted, EntryFailure>;

}  // namespace vcpu

#endif  // VCPU_VCPU_EXIT_H_
