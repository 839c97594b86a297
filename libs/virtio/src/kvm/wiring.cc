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

void SignalEventFd(int fd) {
  uint64_t one = 1;
  while (::write(fd, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

namespace {

// One eventfd per queue of `t`, each watched by `loop`, which hands a
// readable one to the transport as that queue's notification.
absl::StatusOr<std::vector<vm_memory::UniqueFd>> WatchQueueNotifies(EventLoop& loop,
                                                                    Transport* t) {
  std::vector<vm_memory::UniqueFd> fds;
  for (uint16_t q = 0; q < t->num_queues(); ++q) {
    ASSIGN_OR_RETURN(vm_memory::UniqueFd efd, MakeEventFd());
    loop.WatchEventFd(efd.get(), [t, q] { t->Notify(q); });
    fds.push_back(std::move(efd));
  }
  return fds;
}

}  // namespace

absl::StatusOr<IrqLine> IrqfdLine(vcpu::Vm& vm, uint32_t gsi) {
  ASSIGN_OR_RETURN(vm_memory::UniqueFd fd, MakeEventFd());
  RETURN_IF_ERROR(vm.AssignIrqfd(fd.get(), gsi));
  auto raise = [raw = fd.get()] { SignalEventFd(raw); };
  return IrqLine{std::move(fd), std::move(raise)};
}

absl::StatusOr<std::vector<vm_memory::UniqueFd>> WireMmioNotify(
    vcpu::Vm& vm, EventLoop& loop, const std::shared_ptr<MmioTransport>& t, uint64_t base) {
  ASSIGN_OR_RETURN(std::vector<vm_memory::UniqueFd> fds, WatchQueueNotifies(loop, t.get()));
  for (size_t q = 0; q < fds.size(); ++q) {
    RETURN_IF_ERROR(vm.AssignIoeventfd(fds[q].get(), base + kMmioQueueNotify, 4,
                                       /*pio=*/false, q));
  }
  return fds;
}

absl::Status PciBarMapper::Attach(std::shared_ptr<PciTransport> t) {
  t_ = std::move(t);
  ASSIGN_OR_RETURN(notify_fds_, WatchQueueNotifies(loop_, t_.get()));
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
