// Wiring virtio transports to KVM, the part every VMM on KVM would write:
// interrupts through irqfds, queue notifications through ioeventfds
// straight to the device's event loop, and a virtio-pci BAR that follows
// the guest's programming.
//
//   // virtio-mmio at `base`, interrupt on `gsi` (full in-kernel irqchip):
//   ASSIGN_OR_RETURN(IrqLine irq, IrqfdLine(vm, gsi));
//   auto t = std::make_shared<MmioTransport>(dev, memory, loop, irq.raise);
//   RETURN_IF_ERROR(mmio_bus.Insert(t, base, kMmioSize, t->device().name()));
//   ASSIGN_OR_RETURN(auto notify_fds, WireMmioNotify(vm, loop, t, base));
//
//   // virtio-pci: the BAR's MMIO range and notify ioeventfds move with it.
//   auto mapper = std::make_unique<PciBarMapper>(vm, mmio_bus, loop);
//   options.on_bar_change = [m = mapper.get()](auto at) { m->Move(at); };
//   auto t = std::make_shared<PciTransport>(dev, memory, loop, options);
//   RETURN_IF_ERROR(mapper->Attach(t));
//
// The returned file descriptors must outlive the transport's use.
#ifndef VIRTIO_KVM_WIRING_H_
#define VIRTIO_KVM_WIRING_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "vcpu/bus.h"
#include "vcpu/kvm.h"
#include "virtio/event_loop.h"
#include "virtio/mmio.h"
#include "virtio/pci.h"
#include "vm-memory/unique_fd.h"

namespace virtio {

// A non-blocking, close-on-exec eventfd.
absl::StatusOr<vm_memory::UniqueFd> MakeEventFd();
// Adds 1 to an eventfd's counter (retrying on EINTR), from any thread.
void SignalEventFd(int fd);

// An edge on `gsi` per call of `raise`, through an irqfd (KVM's in-kernel
// irqchip delivers it); `fd` keeps the irqfd alive.
struct IrqLine {
  vm_memory::UniqueFd fd;
  std::function<void()> raise;
};
absl::StatusOr<IrqLine> IrqfdLine(vcpu::Vm& vm, uint32_t gsi);

// One ioeventfd per queue on the transport's QueueNotify register (a
// datamatch on the queue index), each watched by `loop`. Without them the
// notifications still arrive, as MMIO exits on the vCPU thread.
absl::StatusOr<std::vector<vm_memory::UniqueFd>> WireMmioNotify(
    vcpu::Vm& vm, EventLoop& loop, const std::shared_ptr<MmioTransport>& t, uint64_t base);

// Keeps a virtio-pci BAR's MMIO range and notification ioeventfds where
// the guest has put the BAR (memory decoding on), or nowhere (off).
class PciBarMapper {
 public:
  PciBarMapper(vcpu::Vm& vm, vcpu::Bus& mmio, EventLoop& loop)
      : vm_(vm), mmio_(mmio), loop_(loop) {}
  // Creates the notification eventfds; call once, before the guest runs.
  absl::Status Attach(std::shared_ptr<PciTransport> t);
  // The transport's on_bar_change: the BAR now decodes at `to` (or not).
  void Move(std::optional<uint64_t> to);

 private:
  void ForEachNotify(uint64_t bar, const std::function<void(int, uint64_t)>& fn);

  vcpu::Vm& vm_;
  vcpu::Bus& mmio_;
  EventLoop& loop_;
  std::shared_ptr<PciTransport> t_;
  std::vector<vm_memory::UniqueFd> notify_fds_;
  std::optional<uint64_t> at_;
};

}  // namespace virtio

#endif  // VIRTIO_KVM_WIRING_H_
