#include "virtio/vhost_vsock.h"

#include <fcntl.h>
// <linux/vhost.h> pulls in <linux/virtio_ring.h>, whose inline vring_init
// is C that C++ rejects; vhost needs nothing from it, so skip it.
#define _LINUX_VIRTIO_RING_H
#include <linux/vhost.h>
#undef _LINUX_VIRTIO_RING_H
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"

namespace virtio {
namespace {

constexpr uint64_t kVsockFeatureSeqpacket = 1ULL << 1;  // VIRTIO_VSOCK_F_SEQPACKET

// One vhost ioctl; the error names the request and, when the kernel
// explains nothing more, the errno.
absl::Status Ioctl(int fd, unsigned long request, const void* arg, const char* what) {
  if (::ioctl(fd, request, arg) < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("vhost-vsock: ", what));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> HostAddressOf(const vm_memory::GuestMemory& memory,
                                       vm_memory::GuestAddress gpa, uint64_t len,
                                       const char* what) {
  const vm_memory::GuestRegion* r = memory.FindRegion(gpa);
  if (r == nullptr || gpa.value - r->start().value + len > r->size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s at %#x (%d bytes) is not inside one RAM region", what, gpa.value, len));
  }
  return r->host_address().value + (gpa.value - r->start().value);
}

}  // namespace

absl::StatusOr<std::shared_ptr<VhostVsock>> VhostVsock::Create(EventLoop& loop,
                                                               VhostVsockOptions options) {
  if (options.guest_cid < 3 || options.guest_cid > 0xfffffffeULL) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest CID ", options.guest_cid, " must be 3 to 4294967294"));
  }
  vm_memory::UniqueFd fd(::open(options.device_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    int e = errno;
    std::string hint = e == ENOENT ? " (is the vhost_vsock module loaded?)" : "";
    return absl::ErrnoToStatus(e, absl::StrCat("open ", options.device_path, hint));
  }
  RETURN_IF_ERROR(Ioctl(fd.get(), VHOST_SET_OWNER, nullptr, "VHOST_SET_OWNER"));
  uint64_t features = 0;
  RETURN_IF_ERROR(Ioctl(fd.get(), VHOST_GET_FEATURES, &features, "VHOST_GET_FEATURES"));
  if (!(features & Bit(kFVersion1))) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "vhost-vsock: the kernel offers features %#x without VERSION_1", features));
  }
  uint64_t cid = options.guest_cid;
  if (::ioctl(fd.get(), VHOST_VSOCK_SET_GUEST_CID, &cid) < 0) {
    int e = errno;
    if (e == EADDRINUSE) {
      return absl::AlreadyExistsError(
          absl::StrCat("vhost-vsock: guest CID ", cid, " is already in use by another VM"));
    }
    return absl::ErrnoToStatus(e, absl::StrCat("vhost-vsock: VHOST_VSOCK_SET_GUEST_CID ", cid));
  }
  return std::shared_ptr<VhostVsock>(
      new VhostVsock(loop, std::move(options), std::move(fd), features));
}

VhostVsock::VhostVsock(EventLoop& loop, VhostVsockOptions options, vm_memory::UniqueFd fd,
                       uint64_t vhost_features)
    : loop_(loop),
      options_(std::move(options)),
      fd_(std::move(fd)),
      vhost_features_(vhost_features),
      device_features_(vhost_features & kVsockFeatureSeqpacket) {}

VhostVsock::~VhostVsock() {
  if (loop_.InLoopThread() || loop_.stopped()) {
    Stop();
  } else {
    loop_.RunSync([this] { Stop(); });
  }
}

std::string VhostVsock::name() const {
  return absl::StrCat("virtio-vsock vhost cid ", options_.guest_cid);
}

void VhostVsock::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  uint64_t cid = options_.guest_cid;
  CopyConfig({reinterpret_cast<const uint8_t*>(&cid), sizeof(cid)}, offset, data);
}

absl::Status VhostVsock::SetMemTable(const vm_memory::GuestMemory& memory) {
  std::vector<const vm_memory::GuestRegion*> regions = memory.regions();
  std::vector<uint8_t> buf(sizeof(vhost_memory) + regions.size() * sizeof(vhost_memory_region));
  auto* table = reinterpret_cast<vhost_memory*>(buf.data());
  table->nregions = static_cast<uint32_t>(regions.size());
  for (size_t i = 0; i < regions.size(); ++i) {
    table->regions[i].guest_phys_addr = regions[i]->start().value;
    table->regions[i].memory_size = regions[i]->size();
    table->regions[i].userspace_addr = regions[i]->host_address().value;
  }
  return Ioctl(fd_.get(), VHOST_SET_MEM_TABLE, table, "VHOST_SET_MEM_TABLE");
}

absl::Status VhostVsock::SetRing(uint16_t index, const Queue& queue,
                                 const vm_memory::GuestMemory& memory) {
  const uint64_t n = queue.size();
  vhost_vring_state num{index, static_cast<unsigned int>(n)};
  RETURN_IF_ERROR(Ioctl(fd_.get(), VHOST_SET_VRING_NUM, &num, "VHOST_SET_VRING_NUM"));
  vhost_vring_state base{index, queue.next_avail()};
  RETURN_IF_ERROR(Ioctl(fd_.get(), VHOST_SET_VRING_BASE, &base, "VHOST_SET_VRING_BASE"));
  vhost_vring_addr addr{};
  addr.index = index;
  ASSIGN_OR_RETURN(addr.desc_user_addr,
                   HostAddressOf(memory, queue.desc_table(), 16 * n, "descriptor table"));
  ASSIGN_OR_RETURN(addr.avail_user_addr,
                   HostAddressOf(memory, queue.avail_ring(), 6 + 2 * n, "available ring"));
  ASSIGN_OR_RETURN(addr.used_user_addr,
                   HostAddressOf(memory, queue.used_ring(), 6 + 8 * n, "used ring"));
  RETURN_IF_ERROR(Ioctl(fd_.get(), VHOST_SET_VRING_ADDR, &addr, "VHOST_SET_VRING_ADDR"));

  Ring& ring = rings_[index];
  ring.kick.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ring.call.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ring.err.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!ring.kick.valid() || !ring.call.valid() || !ring.err.valid()) {
    return absl::ErrnoToStatus(errno, "eventfd");
  }
  ring.broken = false;
  vhost_vring_file kick{index, ring.kick.get()};
  RETURN_IF_ERROR(Ioctl(fd_.get(), VHOST_SET_VRING_KICK, &kick, "VHOST_SET_VRING_KICK"));
  vhost_vring_file call{index, ring.call.get()};
  RETURN_IF_ERROR(Ioctl(fd_.get(), VHOST_SET_VRING_CALL, &call, "VHOST_SET_VRING_CALL"));
  vhost_vring_file err{index, ring.err.get()};
  RETURN_IF_ERROR(Ioctl(fd_.get(), VHOST_SET_VRING_ERR, &err, "VHOST_SET_VRING_ERR"));
  ring.call_watch =
      std::make_unique<FdWatch>(loop_, ring.call.get(), [this, index] { OnCall(index); });
  ring.call_watch->Arm();
  ring.err_watch =
      std::make_unique<FdWatch>(loop_, ring.err.get(), [this, index] { OnError(index); });
  ring.err_watch->Arm();
  return absl::OkStatus();
}

absl::Status VhostVsock::Activate(const ActivateContext& ctx) {
  ctx_ = ctx;
  // The transport only lets the driver accept what it offered: VERSION_1,
  // INDIRECT_DESC, EVENT_IDX and device_features_, all of which vhost
  // offered too (checked here in case a kernel stops offering one).
  uint64_t acked = ctx.features;
  if ((acked & ~vhost_features_) != 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("vhost-vsock: the driver accepted features %#x the kernel lacks",
                        acked & ~vhost_features_));
  }
  RETURN_IF_ERROR(Ioctl(fd_.get(), VHOST_SET_FEATURES, &acked, "VHOST_SET_FEATURES"));
  RETURN_IF_ERROR(SetMemTable(*ctx.memory));
  for (uint16_t i : {kRxQueue, kTxQueue}) {
    const Queue& q = ctx.queues[i];
    if (!q.active()) {
      return absl::FailedPreconditionError(
          absl::StrCat("vhost-vsock: the driver did not set up queue ", i));
    }
    RETURN_IF_ERROR(SetRing(i, q, *ctx.memory));
  }
  int run = 1;
  RETURN_IF_ERROR(Ioctl(fd_.get(), VHOST_VSOCK_SET_RUNNING, &run, "VHOST_VSOCK_SET_RUNNING"));
  running_ = true;
  return absl::OkStatus();
}

absl::Status VhostVsock::ProcessQueue(uint16_t index) {
  if (index == kEventQueue || index >= rings_.size() || !running_) return absl::OkStatus();
  if (rings_[index].broken) {
    return absl::DataLossError(
        "the kernel's vhost-vsock stopped the ring: a malformed descriptor chain or a buffer "
        "outside guest RAM");
  }
  uint64_t one = 1;
  if (::write(rings_[index].kick.get(), &one, sizeof(one)) < 0 && errno != EAGAIN) {
    return absl::ErrnoToStatus(errno, "vhost-vsock: kick");
  }
  return absl::OkStatus();
}

void VhostVsock::OnCall(uint16_t index) {
  Ring& ring = rings_[index];
  uint64_t count;
  while (::read(ring.call.get(), &count, sizeof(count)) < 0 && errno == EINTR) {
  }
  if (running_ && ctx_.interrupt != nullptr) ctx_.interrupt->SignalQueue(index);
  if (ring.call_watch) ring.call_watch->Arm();
}

void VhostVsock::OnError(uint16_t index) {
  Ring& ring = rings_[index];
  uint64_t count;
  while (::read(ring.err.get(), &count, sizeof(count)) < 0 && errno == EINTR) {
  }
  if (!running_) return;
  ring.broken = true;  // ProcessQueue reports it, and the transport sets needs-reset
  if (ctx_.process_again) ctx_.process_again(index);
}

void VhostVsock::Stop() {
  if (running_) {
    int run = 0;
    if (::ioctl(fd_.get(), VHOST_VSOCK_SET_RUNNING, &run) < 0) {
      absl::FPrintF(stderr, "kindling: %s: stopping: %s\n", name(), std::strerror(errno));
    }
    running_ = false;
  }
  for (uint16_t i = 0; i < rings_.size(); ++i) {
    Ring& ring = rings_[i];
    if (!ring.kick.valid()) continue;
    // Stops the ring; the index it returns is where a restore would resume.
    vhost_vring_state base{i, 0};
    ::ioctl(fd_.get(), VHOST_GET_VRING_BASE, &base);
    vhost_vring_file unbind{i, -1};
    ::ioctl(fd_.get(), VHOST_SET_VRING_KICK, &unbind);
    ::ioctl(fd_.get(), VHOST_SET_VRING_CALL, &unbind);
    ::ioctl(fd_.get(), VHOST_SET_VRING_ERR, &unbind);
    ring.call_watch.reset();
    ring.err_watch.reset();
    ring.kick.reset();
    ring.call.reset();
    ring.err.reset();
  }
}

void VhostVsock::Reset() {
  Stop();
  ctx_ = {};
}

}  // namespace virtio
