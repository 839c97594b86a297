// Rng: virtio-rng (virtio 1.2, 5.4). Fills each device-writable buffer
// the driver offers with getrandom(2) bytes, at most kMaxRequest per
// request so a guest cannot make the device spin on one huge chain.
#ifndef VIRTIO_RNG_H_
#define VIRTIO_RNG_H_

#include <atomic>

#include "virtio/device.h"

namespace virtio {

class Rng : public VirtioDevice {
 public:
  static constexpr uint32_t kMaxRequest = 64 * 1024;

  DeviceType type() const override { return DeviceType::kRng; }
  std::string name() const override { return "virtio-rng"; }
  uint64_t features() const override { return 0; }
  uint16_t num_queues() const override { return 1; }
  void ReadConfig(uint64_t, std::span<uint8_t> data) override { CopyConfig({}, 0, data); }
  absl::Status Activate(const ActivateContext& ctx) override;
  absl::Status ProcessQueue(uint16_t index) override;
  void Reset() override { ctx_ = {}; }
  uint64_t bytes_served() const { return bytes_served_.load(); }
  std::vector<std::pair<std::string, uint64_t>> Counters() const override {
    return {{"bytes", bytes_served_.load()}};
  }

 private:
  ActivateContext ctx_;
  std::atomic<uint64_t> bytes_served_{0};
};

}  // namespace virtio

#endif  // VIRTIO_RNG_H_
