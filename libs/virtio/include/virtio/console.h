// Console: virtio-console (virtio 1.2, 5.3) with a single port (hvc0).
// What the guest writes on the transmit queue goes to `output`; bytes
// from SendInput are delivered on the receive queue as the guest offers
// buffers (at most kMaxPendingInput held meanwhile).
#ifndef VIRTIO_CONSOLE_H_
#define VIRTIO_CONSOLE_H_

#include <deque>
#include <functional>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "virtio/device.h"
#include "virtio/event_loop.h"

namespace virtio {

class Console : public VirtioDevice {
 public:
  static constexpr size_t kMaxPendingInput = 64 * 1024;
  static constexpr uint32_t kMaxWrite = 64 * 1024;  // per transmit chain
  static constexpr uint16_t kReceiveQueue = 0;
  static constexpr uint16_t kTransmitQueue = 1;

  // `loop` is the loop the console's transport runs on.
  Console(EventLoop& loop, std::function<void(std::string_view)> output);

  DeviceType type() const override { return DeviceType::kConsole; }
  std::string name() const override { return "virtio-console"; }
  uint64_t features() const override { return 0; }
  uint16_t num_queues() const override { return 2; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  absl::Status Activate(const ActivateContext& ctx) override;
  absl::Status ProcessQueue(uint16_t index) override;
  void Reset() override;
  // From any thread; returns how many bytes were accepted.
  size_t SendInput(std::string_view bytes);

 private:
  absl::Status Transmit();
  absl::Status Receive();

  EventLoop& loop_;
  std::function<void(std::string_view)> output_;
  ActivateContext ctx_;
  bool active_ = false;  // loop thread
  absl::Mutex mu_;
  std::deque<uint8_t> input_ ABSL_GUARDED_BY(mu_);
};

}  // namespace virtio

#endif  // VIRTIO_CONSOLE_H_
