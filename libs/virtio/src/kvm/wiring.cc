#include "virtio/kvm/wiring.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"

namespace virtio {

absl::StatusOr<vm_memory::UniqueFd> MakeEventFd() {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return absl::ErrnoToStatus(errno, "eventfd");
  return vm_memory::UniqueFd(fd);
}

absl::StatusOr<IrqLine> IrqfdLine(vcpu::Vm& vm, uint32_t gsi) {
  ASSIGN_OR_RETURN(vm_memory::UniqueFd fd, MakeEventFd());
  RETURN_IF_ERROR(vm.AssignIrqfd(fd.get(), gsi));
  auto raise = [raw = fd.get()] {
    uint64_t one = 1;
    while (::write(raw, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
  };
  return IrqLine{std::move(fd), std::move(raise)};
}

absl::StatusOr<std::vector<vm_memory::UniqueFd>> WireMmioNotify(
    vcpu::Vm& vm, EventLoop& loop, const std::shared_ptr<MmioTransport>& t, uint64_t base) {
  std::vector<vm_memory::UniqueFd> fds;
  for (uint16_t q = 0; q < t->num_queues(); ++q) {
    ASSIGN_OR_RETURN(vm_memory::UniqueFd efd, MakeEventFd());
    RETURN_IF_ERROR(vm.AssignIoeventfd(efd.get(), base + kMmioQueueNotify, 4,
                                       /*pio=*/false, q));
    loop.WatchEventFd(efd.get(), [t = t.get(), q] { t->Notify(q); });
    fds.push_back(std::move(efd));
  }
  return fds;
}

absl::Status PciBarMapper::Attach(std::shared_ptr<PciTransport> t) {
  t_ = std::move(t);
  for (uint16_t q = 0; q < t_->num_queues(); ++q) {
    ASSIGN_OR_RETURN(vm_memory::UniqueFd efd, MakeEventFd());
    loop_.WatchEventFd(efd.get(), [t = t_.get(), q] { t->Notify(q); });
    notify_fds_.push_back(std::move(efd));
  }
  return absl::OkStatus();
}

void PciBarMapper::Move(std::optional<uint64_t> to) {
  if (at_) {
    mmio_.Remove(*at_);
    ForEachNotify(*at_, [&](int fd, uint64_t a) {
      (void)vm_.DeassignIoeventfd(fd, a, 0, /*pio=*/false);
    });
  }
  at_ = to;
  if (!to) return;
  absl::Status s = mmio_.Insert(t_->bar(), *to, kPciBarSize, t_->device().name());
  if (!s.ok()) {
    absl::FPrintF(stderr, "kindling: %s: BAR 0 at %#x: %s\n", t_->device().name(), *to,
                  s.message());
    at_.reset();
    return;
  }
  // Without an ioeventfd the write still reaches the BAR as an MMIO exit.
  ForEachNotify(*to, [&](int fd, uint64_t a) {
    (void)vm_.AssignIoeventfd(fd, a, 0, /*pio=*/false);
  });
}

void PciBarMapper::ForEachNotify(uint64_t bar, const std::function<void(int, uint64_t)>& fn) {
  for (size_t q = 0; q < notify_fds_.size(); ++q) {
    fn(notify_fds_[q].get(), bar + kPciNotifyOffset + q * kPciNotifyMultiplier);
  }
}

}  // namespace virtio
