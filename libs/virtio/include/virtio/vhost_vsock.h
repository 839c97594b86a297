// VhostVsock: virtio-vsock whose data path is the host kernel's vhost_vsock
// (/dev/vhost-vsock), the way QEMU's vhost-vsock-device works. Host
// programs then use ordinary AF_VSOCK sockets: connect(CID, port) reaches a
// guest listener, and guest connections to CID 2 reach host listeners.
//
//   ASSIGN_OR_RETURN(auto vsock, VhostVsock::Create(loop, {.guest_cid = 3}));
//   ... MmioTransport(vsock, mem, loop, irq) ...
//
// Create opens the device, takes ownership (VHOST_SET_OWNER) and claims the
// guest CID, so a CID another VM holds is refused before the guest boots.
// Activate hands the kernel the guest's RAM layout, the rx and tx rings
// (queues 0 and 1) and one kick and one call eventfd per ring, then starts
// it. The event queue (2) stays in the VMM; kindling sends no events.
//
// Kicks and interrupts pass through the device's EventLoop: a notification
// of queue 0/1 writes that ring's kick eventfd, and a call eventfd the
// kernel signals becomes Interrupt::SignalQueue. That keeps the transports
// unchanged (the mmio transport must set its interrupt-status bit anyway);
// handing the ioeventfd and irqfd straight to the kernel is a later step.
//
// The kernel walks the rings itself and checks every address against the
// memory table, so a hostile guest meets vhost's own validation. A ring the
// kernel rejects at activation, or later reports broken through its error
// eventfd (VHOST_SET_VRING_ERR: a descriptor loop, an address outside the
// table), puts the device into needs-reset like any other device.
// Not supported: dirty logging (VHOST_F_LOG_ALL), hence no live migration
// with this backend yet.
#ifndef VIRTIO_VHOST_VSOCK_H_
#define VIRTIO_VHOST_VSOCK_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "virtio/device.h"
#include "virtio/event_loop.h"
#include "vm-memory/unique_fd.h"

namespace virtio {

struct VhostVsockOptions {
  uint64_t guest_cid = 3;  // 3 .. 2^32-2
  std::string device_path = "/dev/vhost-vsock";
};

class VhostVsock : public VirtioDevice {
 public:
  static constexpr uint16_t kRxQueue = 0;
  static constexpr uint16_t kTxQueue = 1;
  static constexpr uint16_t kEventQueue = 2;

  static absl::StatusOr<std::shared_ptr<VhostVsock>> Create(EventLoop& loop,
                                                            VhostVsockOptions options);
  ~VhostVsock() override;

  DeviceType type() const override { return DeviceType::kVsock; }
  std::string name() const override;
  // The vsock feature bits the kernel offers (SEQPACKET on newer kernels).
  uint64_t features() const override { return device_features_; }
  uint16_t num_queues() const override { return 3; }
  // vhost_vsock walks split rings only (no RING_PACKED in its features).
  bool supports_packed_rings() const override {
    return vhost_features_ & Bit(kFRingPacked);
  }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  absl::Status Activate(const ActivateContext& ctx) override;
  absl::Status ProcessQueue(uint16_t index) override;
  void Reset() override;
  absl::Status CheckSnapshot() const override {
    return absl::FailedPreconditionError(
        "vhost-vsock: its rings and connections are in the host kernel, which a snapshot "
        "cannot read yet");
  }

  // Whether the kernel is running the rings (loop thread).
  bool running() const { return running_; }

 private:
  struct Ring {
    vm_memory::UniqueFd kick;
    vm_memory::UniqueFd call;
    vm_memory::UniqueFd err;  // the kernel found the ring broken
    std::unique_ptr<FdWatch> call_watch;
    std::unique_ptr<FdWatch> err_watch;
    bool broken = false;
  };

  VhostVsock(EventLoop& loop, VhostVsockOptions options, vm_memory::UniqueFd fd,
             uint64_t vhost_features);
  absl::Status SetMemTable(const vm_memory::GuestMemory& memory);
  absl::Status SetRing(uint16_t index, const Queue& queue, const vm_memory::GuestMemory& memory);
  void OnCall(uint16_t index);
  void OnError(uint16_t index);
  void Stop();

  EventLoop& loop_;
  VhostVsockOptions options_;
  vm_memory::UniqueFd fd_;
  uint64_t vhost_features_;   // everything VHOST_GET_FEATURES reported
  uint64_t device_features_;  // the vsock-specific part we offer
  std::array<Ring, 2> rings_;
  ActivateContext ctx_;
  bool running_ = false;
};

}  // namespace virtio

#endif  // VIRTIO_VHOST_VSOCK_H_
