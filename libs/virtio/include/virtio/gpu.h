// Gpu: virtio-gpu (virtio 1.2, 5.7) in 2D mode, headless: the guest draws
// into resources and sets a scanout; the host reads the scanout back as a
// picture (Screenshot; gpu_png.h turns it into a PNG). controlq and
// cursorq both go to Gpu2d, which holds the resources and bounds every
// number the guest sends (see gpu_2d.h).
//
//   auto gpu = std::make_shared<Gpu>(GpuLimits{.width = 1024, .height = 768}, memory);
//   ... MmioTransport(gpu, mem, loop, irq) ...
//   absl::StatusOr<GpuImage> shot = gpu->Screenshot(0);   // any thread
//
// Offers VIRTIO_GPU_F_EDID (GET_EDID returns a 1.4 block for the mode).
// A request is read whole, at most kMaxRequest bytes (ATTACH_BACKING with
// Gpu2d::kMaxBackingEntries entries fits); a longer one gets
// ERR_INVALID_PARAMETER. A response that does not fit the driver's
// writable buffers is cut short, as the used length tells the driver.
#ifndef VIRTIO_GPU_H_
#define VIRTIO_GPU_H_

#include <atomic>
#include <memory>

#include "virtio/device.h"
#include "virtio/gpu_2d.h"

namespace virtio {

inline constexpr int kGpuFVirgl = 0;
inline constexpr int kGpuFEdid = 1;

class Gpu : public VirtioDevice {
 public:
  static constexpr uint64_t kMaxRequest = 512 << 10;
  static constexpr uint16_t kControlQueue = 0;
  static constexpr uint16_t kCursorQueue = 1;

  // `memory` is the guest's RAM, which must outlive the device.
  Gpu(const GpuLimits& limits, vm_memory::GuestMemory& memory)
      : limits_(limits), gpu_(memory, limits) {}

  DeviceType type() const override { return DeviceType::kGpu; }
  std::string name() const override { return "virtio-gpu"; }
  uint64_t features() const override { return limits_.edid ? Bit(kGpuFEdid) : 0; }
  uint16_t num_queues() const override { return 2; }
  // struct virtio_gpu_config: events_read, events_clear, num_scanouts,
  // num_capsets.
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override;
  absl::Status Activate(const ActivateContext& ctx) override;
  absl::Status ProcessQueue(uint16_t index) override;
  void Reset() override;
  std::vector<std::pair<std::string, uint64_t>> Counters() const override;

  // ---- host side, any thread ----
  // What scanout `scanout` shows now; FAILED_PRECONDITION before the
  // driver has set it up (or the device is not active).
  absl::StatusOr<GpuImage> Screenshot(uint32_t scanout = 0) const;
  const GpuLimits& limits() const { return limits_; }
  // Snapshots: the resources and their pixels, the scanout, the cursor
  // (Gpu2d::SaveState). Restore before the transport's restore.
  GpuState SaveState() const { return gpu_.SaveState(); }
  absl::Status RestoreState(GpuState state) { return gpu_.RestoreState(std::move(state)); }

 private:
  absl::StatusOr<uint32_t> Serve(const DescriptorChain& chain);

  const GpuLimits limits_;
  ActivateContext ctx_;
  Gpu2d gpu_;  // a reset empties it; its counters run on
  std::atomic<bool> active_{false};  // the driver has set it up (Screenshot)
  std::atomic<uint64_t> oversized_{0};
};

}  // namespace virtio

#endif  // VIRTIO_GPU_H_
