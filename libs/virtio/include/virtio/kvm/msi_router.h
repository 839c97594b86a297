// MsiRouter: MSI delivery through irqfd. Each MSI source (a virtio-pci
// MSI-X vector) gets a GSI and an eventfd bound to it with KVM_IRQFD; a
// send writes the eventfd, after pointing the GSI's route at the message
// the guest programmed whenever that message changed.
//
//   virtio::MsiRouter router(vm, vcpu::IrqchipMode::kFull);
//   ASSIGN_OR_RETURN(int src, router.AddSource());
//   router.Send(src, 0xfee00000, 0x41);   // from any thread
//
// KVM_SET_GSI_ROUTING replaces the whole table, so with a full in-kernel
// irqchip the table also carries the PIC and IOAPIC pins (GSIs 0-23).
#ifndef VIRTIO_KVM_MSI_ROUTER_H_
#define VIRTIO_KVM_MSI_ROUTER_H_

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "vcpu/kvm.h"
#include "vm-memory/unique_fd.h"

namespace virtio {

class MsiRouter {
 public:
  MsiRouter(vcpu::Vm& vm, vcpu::IrqchipMode mode);
  absl::StatusOr<int> AddSource();
  void Send(int source, uint64_t address, uint32_t data);
  // Route changes so far (for tests and statistics).
  uint64_t route_updates() const;

 private:
  struct Source {
    uint32_t gsi;
    vm_memory::UniqueFd fd;
    uint64_t address = 0;
    uint32_t data = 0;
    bool routed = false;
  };
  absl::Status Commit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  vcpu::Vm& vm_;
  const vcpu::IrqchipMode mode_;
  mutable absl::Mutex mu_;
  std::vector<Source> sources_ ABSL_GUARDED_BY(mu_);
  uint64_t updates_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace virtio

#endif  // VIRTIO_KVM_MSI_ROUTER_H_
