// Gpu: virtio-gpu (virtio 1.2, 5.7), headless: the guest draws into
// resources and sets a scanout; the host reads the scanout back as a
// picture (Screenshot; gpu_png.h turns it into a PNG). 2D commands go to
// Gpu2d, which holds 2D resources and bounds every number the guest sends
// (see gpu_2d.h). Given a Renderer3d (gpu_3d.h) the device also offers
// VIRTIO_GPU_F_VIRGL: capsets, contexts, 3D resources, 3D transfers and
// SUBMIT_3D go to the renderer, and so do UNREF, backing and scanout
// commands that name a 3D resource. Both kinds share one id space and one
// host-memory limit (GpuLimits::max_host_bytes).
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
#include <map>
#include <memory>

#include "virtio/device.h"
#include "virtio/gpu_2d.h"
#include "virtio/gpu_3d.h"

namespace virtio {

inline constexpr int kGpuFVirgl = 0;
inline constexpr int kGpuFEdid = 1;

class Gpu : public VirtioDevice {
 public:
  static constexpr uint64_t kMaxRequest = 512 << 10;
  static constexpr uint16_t kControlQueue = 0;
  static constexpr uint16_t kCursorQueue = 1;

  // `memory` is the guest's RAM, which must outlive the device; with a
  // `renderer` the device speaks virgl 3D too.
  Gpu(const GpuLimits& limits, vm_memory::GuestMemory& memory,
      std::unique_ptr<Renderer3d> renderer = nullptr)
      : limits_(limits), gpu_(memory, limits), renderer_(std::move(renderer)) {}

  DeviceType type() const override { return DeviceType::kGpu; }
  std::string name() const override { return "virtio-gpu"; }
  uint64_t features() const override {
    return (limits_.edid ? Bit(kGpuFEdid) : 0) | (renderer_ ? Bit(kGpuFVirgl) : 0);
  }
  uint16_t num_queues() const override { return 2; }
  // struct virtio_gpu_config: events_read, events_clear, num_scanouts,
  // num_capsets.
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override;
  absl::Status Activate(const ActivateContext& ctx) override;
  absl::Status ProcessQueue(uint16_t index) override;
  void Reset() override;
  std::vector<std::pair<std::string, uint64_t>> Counters() const override;
  // Not with virgl, whose contexts and 3D resources live in virglrenderer
  // (FAILED_PRECONDITION, naming it): snapshots and migrations ask first.
  absl::Status CheckSnapshot() const override;

  // One controlq request as the device serves it (routed to Gpu2d or the
  // renderer), its whole response out: for fuzzers and embedders with a
  // transport of their own. Called from one thread at a time.
  std::vector<uint8_t> Execute(std::span<const uint8_t> request) { return Route(request); }

  // ---- host side, any thread ----
  // What scanout `scanout` shows now; FAILED_PRECONDITION before the
  // driver has set it up (or the device is not active).
  absl::StatusOr<GpuImage> Screenshot(uint32_t scanout = 0) const;
  const GpuLimits& limits() const { return limits_; }
  // The 3D renderer, or null in 2D mode.
  const Renderer3d* renderer() const { return renderer_.get(); }
  // Snapshots: the resources and their pixels, the scanout, the cursor
  // (Gpu2d::SaveState). Restore before the transport's restore.
  GpuState SaveState() const { return gpu_.SaveState(); }
  absl::Status RestoreState(GpuState state) { return gpu_.RestoreState(std::move(state)); }

 private:
  // A 3D resource as the router sees it: its size (for the scanout
  // rectangle) and the host memory it was charged.
  struct Resource3d {
    uint32_t width = 0, height = 0;
    uint64_t bytes = 0;
  };
  struct Scanout3d {
    uint32_t resource_id = 0;  // 0: the scanout shows a 2D resource or nothing
    uint32_t x = 0, y = 0, width = 0, height = 0;
  };

  absl::StatusOr<uint32_t> Serve(const DescriptorChain& chain);
  // Sends a request to Gpu2d or to the renderer (virgl mode).
  std::vector<uint8_t> Route(std::span<const uint8_t> req);
  std::vector<uint8_t> Route3d(uint32_t type, std::span<const uint8_t> req);
  // SET_SCANOUT and RESOURCE_FLUSH of a 3D resource: kept here.
  uint32_t Scanout3dCommand(uint32_t type, uint32_t id, std::span<const uint8_t> req);
  // The resource a 2D/3D-shared command names (0 if none or too short).
  static uint32_t ResourceOf(uint32_t type, std::span<const uint8_t> req);
  bool Is3dResource(uint32_t id) const;
  uint64_t Bytes3d() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu3d_);

  const GpuLimits limits_;
  ActivateContext ctx_;
  Gpu2d gpu_;  // a reset empties it; its counters run on
  std::unique_ptr<Renderer3d> renderer_;
  mutable absl::Mutex mu3d_;  // Screenshot reads the 3D scanout from any thread
  std::map<uint32_t, Resource3d> resources3d_ ABSL_GUARDED_BY(mu3d_);
  Scanout3d scanout3d_ ABSL_GUARDED_BY(mu3d_);
  std::atomic<bool> active_{false};  // the driver has set it up (Screenshot)
  std::atomic<uint64_t> oversized_{0};
};

}  // namespace virtio

#endif  // VIRTIO_GPU_H_
