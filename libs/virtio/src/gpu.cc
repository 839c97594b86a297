#include "virtio/gpu.h"

#include <linux/virtio_gpu.h>

#include <algorithm>
#include <vector>

#include "kindling/status_macros.h"

namespace virtio {

void Gpu::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  virtio_gpu_config c{};
  c.events_read = 0;  // no display change is ever signalled
  c.num_scanouts = Gpu2d::kNumScanouts;
  c.num_capsets = renderer_ ? renderer_->info().num_capsets : 0;
  CopyConfig({reinterpret_cast<const uint8_t*>(&c), sizeof(c)}, offset, data);
}

void Gpu::WriteConfig(uint64_t, std::span<const uint8_t>) {
  // events_clear is the only writable field, and no event is ever set.
}

absl::Status Gpu::Activate(const ActivateContext& ctx) {
  ctx_ = ctx;
  active_ = true;
  return absl::OkStatus();
}

absl::Status Gpu::ProcessQueue(uint16_t index) {
  return ServeQueue(ctx_, index, [&](const DescriptorChain& chain) { return Serve(chain); });
}

absl::StatusOr<uint32_t> Gpu::Serve(const DescriptorChain& chain) {
  std::vector<uint8_t> resp;
  if (chain.readable_bytes > kMaxRequest) {
    ++oversized_;
    virtio_gpu_ctrl_hdr h{};
    h.type = VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
    const auto* p = reinterpret_cast<const uint8_t*>(&h);
    resp.assign(p, p + sizeof(h));
  } else {
    std::vector<uint8_t> req(chain.readable_bytes);
    ChainReader r(*ctx_.memory, chain);
    RETURN_IF_ERROR(r.Read(req));
    resp = Route(req);
  }
  ChainWriter w(*ctx_.memory, chain);
  std::span<const uint8_t> out(resp);
  out = out.first(std::min<uint64_t>(out.size(), w.remaining()));
  RETURN_IF_ERROR(w.Write(out));
  return static_cast<uint32_t>(out.size());
}

void Gpu::Reset() {
  ctx_ = {};
  active_ = false;
  gpu_.Reset();
  if (renderer_) renderer_->Reset();
  absl::MutexLock lock(&mu3d_);
  resources3d_.clear();
  scanout3d_ = {};
}

absl::Status Gpu::CheckSnapshot() const {
  if (!renderer_) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "virtio-gpu runs virgl 3D: its contexts and 3D resources live in virglrenderer, which "
      "kindling cannot save yet (a VM with --gpu 2d snapshots and migrates)");
}

std::vector<std::pair<std::string, uint64_t>> Gpu::Counters() const {
  GpuStats s = gpu_.stats();
  return {{"commands", s.commands},   {"errors", s.errors + oversized_.load()},
          {"transfers", s.transfers}, {"flushes", s.flushes}};
}

absl::StatusOr<GpuImage> Gpu::Screenshot(uint32_t scanout) const {
  if (!active_) {
    return absl::FailedPreconditionError("virtio-gpu: the guest driver has not started it");
  }
  if (renderer_ && scanout == 0) {
    Scanout3d s;
    {
      absl::MutexLock lock(&mu3d_);
      s = scanout3d_;
    }
    if (s.resource_id != 0) {
      auto px = renderer_->ReadPixels(s.resource_id, s.x, s.y, s.width, s.height);
      if (!px.ok()) return px.status();
      return PixelsToRgb(px->format, px->data.data(), uint64_t{s.width} * 4, s.width, s.height);
    }
  }
  return gpu_.Screenshot(scanout);
}

}  // namespace virtio
