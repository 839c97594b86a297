// Transport: what virtio-mmio and virtio-pci share — device status,
// feature negotiation, queue configuration, activation, reset and the
// needs-reset state — independent of how registers are laid out.
//
// Threads: register accesses come from vCPU threads; activation, queue
// processing and reset run on the device's EventLoop, so the device and
// its queues only ever run on one thread. A failing device is marked
// DEVICE_NEEDS_RESET, the reason is logged once, the driver gets a
// configuration-change interrupt, and notifications are ignored until the
// driver resets it.
#ifndef VIRTIO_TRANSPORT_H_
#define VIRTIO_TRANSPORT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "virtio/device.h"
#include "virtio/event_loop.h"
#include "virtio/queue.h"

namespace virtio {

// What the transport holds for a snapshot or a migration, besides the
// device's own state and a concrete transport's registers.
struct TransportState {
  uint32_t status = 0;
  uint64_t driver_features = 0;
  uint8_t config_generation = 0;
  std::string failure;  // why the device needs a reset; "" if it does not
  std::vector<QueueState> queues;
};

class Transport {
 public:
  Transport(std::shared_ptr<VirtioDevice> device, vm_memory::GuestMemory& memory,
            EventLoop& loop);
  virtual ~Transport() = default;

  VirtioDevice& device() { return *device_; }
  EventLoop& loop() { return loop_; }
  // Everything offered: the device's bits plus VERSION_1, INDIRECT_DESC
  // and EVENT_IDX (and RING_PACKED after OfferPackedRings).
  uint64_t offered_features() const { return offered_.load(); }
  // Also offers VIRTIO_F_RING_PACKED, if the device can use packed rings.
  // Before the driver starts (the VMM's setup).
  void OfferPackedRings();
  uint32_t DeviceFeatures(uint32_t select) const;
  void SetDriverFeatures(uint32_t select, uint32_t value);
  uint64_t driver_features() const;

  uint32_t status() const { return status_.load(); }
  // A driver write of the status register (0 resets the device).
  void WriteStatus(uint32_t value);
  bool driver_ok() const { return status_.load() & kStatusDriverOk; }
  uint8_t config_generation() const { return config_generation_.load(); }

  uint16_t num_queues() const { return static_cast<uint16_t>(queues_.size()); }
  // Register-side queue access; nullptr if `index` is out of range. Only
  // meaningful before DRIVER_OK (writes afterwards are ignored by callers).
  Queue* queue(uint32_t index);

  // A queue notification from a vCPU (or ioeventfd): processed on the loop.
  void Notify(uint16_t queue);
  // The device changed its configuration space: bumps config_generation
  // and, once the driver is up, raises a configuration interrupt.
  void ConfigChanged();
  // Runs fn on the loop; an error it returns breaks the device
  // (ActivateContext::post).
  void PostToDevice(std::function<absl::Status()> fn);
  // Marks the device broken (from the loop thread).
  void Fail(const absl::Status& why);
  // The reason the device is in needs-reset, "" if it is not.
  std::string failure() const;
  // Called once (on the loop thread) when the device enters needs-reset,
  // with the device's name and the reason; set before the driver starts.
  using FailureListener = std::function<void(std::string_view device, std::string_view why)>;
  void SetFailureListener(FailureListener listener) { on_failure_ = std::move(listener); }

  // ---- snapshots and migration ----
  // On the loop thread with the vCPUs stopped: the device's Quiesce.
  bool Quiesce();
  // On the loop thread (or while it is held, EventLoop::Hold) after
  // Quiesce returned true.
  TransportState SaveState() const;
  // Loads a saved state into a transport whose driver has not started, on
  // the loop thread: the status, features and queues are checked (features
  // must be offered, queues must fit guest RAM) and, when the driver had
  // set DRIVER_OK, the device is activated as then. Errors name the value.
  absl::Status RestoreState(const TransportState& state);
  // After a restore, before the vCPUs run: each active queue is served and
  // interrupted once, so nothing the driver or device posted around the
  // snapshot waits for an event that was lost with the old process.
  void KickAfterRestore();

 protected:
  // How the transport raises interrupts (set by the concrete transport).
  virtual Interrupt& interrupt() = 0;
  // Called on the loop thread after a reset, e.g. to clear ISR bits.
  virtual void OnReset() {}

 private:
  void Activate();
  // What the device is activated with: the queues, the interrupt and the
  // transport's callbacks, for the negotiated `features`.
  ActivateContext MakeContext(uint64_t features);
  void ResetOnLoop();
  void ProcessPending();

  std::shared_ptr<VirtioDevice> device_;
  vm_memory::GuestMemory& memory_;
  EventLoop& loop_;
  std::atomic<uint64_t> offered_;
  std::vector<Queue> queues_;

  mutable absl::Mutex mu_;  // register-side state below
  uint64_t driver_features_ ABSL_GUARDED_BY(mu_) = 0;
  std::string failure_ ABSL_GUARDED_BY(mu_);

  std::atomic<uint32_t> status_{0};
  std::atomic<uint8_t> config_generation_{0};
  std::atomic<uint64_t> pending_{0};  // queues notified, not yet processed
  bool active_ = false;               // loop thread only
  FailureListener on_failure_;
};

}  // namespace virtio

#endif  // VIRTIO_TRANSPORT_H_
