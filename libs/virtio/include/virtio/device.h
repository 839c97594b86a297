// VirtioDevice: what a device implements; the transports (mmio, pci)
// own the registers, feature negotiation and queue configuration and call
// into the device from its event-loop thread.
//
// A device never sees a queue the driver did not set up correctly: the
// transport activates the queues (Queue::Activate) before Activate().
// Any error a device returns from Activate or ProcessQueue puts it into
// DEVICE_NEEDS_RESET until the driver resets it; nothing else stops.
#ifndef VIRTIO_DEVICE_H_
#define VIRTIO_DEVICE_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "virtio/queue.h"
#include "virtio/types.h"
#include "vm-memory/guest_memory.h"

namespace virtio {

// How a device tells the driver about used buffers or a config change.
class Interrupt {
 public:
  virtual ~Interrupt() = default;
  virtual void SignalQueue(uint16_t queue) = 0;
  virtual void SignalConfig() = 0;
};

struct ActivateContext {
  vm_memory::GuestMemory* memory = nullptr;
  std::span<Queue> queues;  // num_queues() of them, all checked
  Interrupt* interrupt = nullptr;
  uint64_t features = 0;    // what the driver accepted
  // Asks for ProcessQueue(queue) to run again later on the loop: a device
  // serves at most one queue's worth of chains per call, so one busy
  // guest queue cannot starve the other devices sharing the loop.
  std::function<void(uint16_t queue)> process_again;
  // Tells the driver the device configuration changed (e.g. a balloon's
  // new target): bumps config_generation and raises a configuration
  // interrupt. Loop thread; may be empty in tests.
  std::function<void()> config_changed;
  // Runs fn later on the loop thread; callable from any thread (e.g. an
  // I/O completion). An error fn returns breaks the device, like one from
  // ProcessQueue. May be empty in tests of synchronous devices.
  std::function<void(std::function<absl::Status()> fn)> post;
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;
  virtual DeviceType type() const = 0;
  // For logs: e.g. "virtio-blk disk.img".
  virtual std::string name() const = 0;
  // Device-specific feature bits offered; the transport adds VERSION_1,
  // INDIRECT_DESC and EVENT_IDX.
  virtual uint64_t features() const = 0;
  virtual uint16_t num_queues() const = 0;
  virtual uint16_t max_queue_size() const { return kMaxQueueSize; }
  // Whether the device works on packed rings (every device built on Queue
  // does; one whose rings the host kernel walks may not).
  virtual bool supports_packed_rings() const { return true; }
  // Device configuration space; reads past its end return zeros.
  virtual void ReadConfig(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void WriteConfig(uint64_t offset, std::span<const uint8_t> data) {
    (void)offset;
    (void)data;
  }
  virtual absl::Status Activate(const ActivateContext& ctx) = 0;
  // The driver notified queue `index` (or the device asked to be polled).
  virtual absl::Status ProcessQueue(uint16_t index) = 0;
  // Back to the state before Activate; queues are reset by the transport.
  virtual void Reset() = 0;
  // Snapshots: brings an active device to rest, on the loop thread with
  // the vCPUs stopped. True once nothing is in flight and every chain the
  // device took is back with the driver (one it keeps for later, like the
  // balloon's statistics buffer, is given back); false: still completing,
  // ask again shortly while the loop runs.
  // An error breaks the device (it is saved as needing a reset).
  virtual absl::StatusOr<bool> Quiesce() { return true; }
  // Whether this device's state can be saved at all; the error says why
  // not (e.g. state that lives in host sockets or the host kernel).
  virtual absl::Status CheckSnapshot() const { return absl::OkStatus(); }
  // On the loop thread after a restore (Transport::KickAfterRestore), for
  // what the device must tell the driver about the move (vsock: its
  // connections are gone). An error breaks the device.
  virtual absl::Status Restored() { return absl::OkStatus(); }
  // What the device has done so far, for metrics: counters by name
  // ("rx_bytes", "read_ops", ...), monotonic over the device's life.
  // From any thread.
  virtual std::vector<std::pair<std::string, uint64_t>> Counters() const { return {}; }
};

// Serves at most one queue's worth of chains from queue `index`: each goes
// to `serve`, which returns how many bytes it wrote into the chain, and then
// back to the driver; whatever is left waits for ctx.process_again. When the
// ring runs empty, notifications are re-enabled and the ring looked at once
// more, so a chain made available meanwhile is not left waiting. Raises the
// queue's interrupt if anything went back and the driver wants one. An error
// from `serve` or the queue breaks the device. `ready`, if given, is asked
// before each chain; false stops serving (the device resumes itself later).
// A queue that is not active is left alone.
absl::Status ServeQueue(
    const ActivateContext& ctx, uint16_t index,
    const std::function<absl::StatusOr<uint32_t>(const DescriptorChain&)>& serve,
    const std::function<bool()>& ready = nullptr);

// What `serve` returns for a chain the device keeps for now (it returns it
// later with Queue::PushUsed itself), e.g. the balloon's statistics buffer.
inline constexpr uint32_t kKeepChain = 0xffffffff;

// Copies `data.size()` bytes of a config struct at `offset` into `data`,
// zeros past its end.
void CopyConfig(std::span<const uint8_t> config, uint64_t offset, std::span<uint8_t> data);

}  // namespace virtio

#endif  // VIRTIO_DEVICE_H_
