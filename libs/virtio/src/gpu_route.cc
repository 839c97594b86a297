// Gpu's router for virgl mode: which of Gpu2d and the 3D renderer gets
// each request (gpu.h).
#include <linux/virtio_gpu.h>

#include "gpu_wire.h"
#include "virtio/gpu.h"

namespace virtio {
namespace {

using gpu_wire::Load;

template <typename T>
uint32_t IdOf(std::span<const uint8_t> req) {
  T cmd;
  return Load(req, cmd) ? cmd.resource_id : 0;
}

bool Inside(const virtio_gpu_rect& r, uint32_t width, uint32_t height) {
  return uint64_t{r.x} + r.width <= width && uint64_t{r.y} + r.height <= height;
}

uint32_t TypeOf(std::span<const uint8_t> resp) {
  virtio_gpu_ctrl_hdr h{};
  Load(resp, h);
  return h.type;
}

}  // namespace

uint32_t Gpu::ResourceOf(uint32_t type, std::span<const uint8_t> req) {
  switch (type) {
    case VIRTIO_GPU_CMD_RESOURCE_UNREF: return IdOf<virtio_gpu_resource_unref>(req);
    case VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING:
      return IdOf<virtio_gpu_resource_attach_backing>(req);
    case VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING:
      return IdOf<virtio_gpu_resource_detach_backing>(req);
    case VIRTIO_GPU_CMD_SET_SCANOUT: return IdOf<virtio_gpu_set_scanout>(req);
    case VIRTIO_GPU_CMD_RESOURCE_FLUSH: return IdOf<virtio_gpu_resource_flush>(req);
    case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D: return IdOf<virtio_gpu_transfer_to_host_2d>(req);
    case VIRTIO_GPU_CMD_UPDATE_CURSOR: return IdOf<virtio_gpu_update_cursor>(req);
    default: return 0;
  }
}

bool Gpu::Is3dResource(uint32_t id) const {
  absl::MutexLock lock(&mu3d_);
  return resources3d_.count(id) != 0;
}

uint64_t Gpu::Bytes3d() const {
  uint64_t sum = 0;
  for (const auto& [id, r] : resources3d_) sum += r.bytes;
  return sum;
}

std::vector<uint8_t> Gpu::Route(std::span<const uint8_t> req) {
  virtio_gpu_ctrl_hdr h;
  if (!renderer_ || !Load(req, h)) return gpu_.Execute(req);
  if (Is3dCommand(h.type)) return Route3d(h.type, req);
  const uint32_t id = ResourceOf(h.type, req);
  if (id != 0 && Is3dResource(id)) {
    switch (h.type) {
      case VIRTIO_GPU_CMD_SET_SCANOUT:
      case VIRTIO_GPU_CMD_RESOURCE_FLUSH:
        return gpu_wire::Respond(h, Scanout3dCommand(h.type, id, req), {});
      case VIRTIO_GPU_CMD_UPDATE_CURSOR:  // headless: a cursor is not drawn
        return gpu_wire::Respond(h, VIRTIO_GPU_RESP_OK_NODATA, {});
      case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D: {  // as a 3D transfer, level 0
        virtio_gpu_transfer_to_host_2d t;
        Load(req, t);
        virtio_gpu_transfer_host_3d t3{};
        t3.hdr = h;
        t3.hdr.type = VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D;
        t3.hdr.ctx_id = 0;
        t3.box = {t.r.x, t.r.y, 0, t.r.width, t.r.height, 1};
        t3.offset = t.offset;
        t3.resource_id = id;
        return renderer_->Execute(gpu_wire::Bytes(t3));
      }
      default: break;  // UNREF and backing: the renderer's
    }
    std::vector<uint8_t> resp = renderer_->Execute(req);
    if (h.type == VIRTIO_GPU_CMD_RESOURCE_UNREF && TypeOf(resp) == VIRTIO_GPU_RESP_OK_NODATA) {
      absl::MutexLock lock(&mu3d_);
      resources3d_.erase(id);
      if (scanout3d_.resource_id == id) scanout3d_ = {};
    }
    return resp;
  }
  if (h.type == VIRTIO_GPU_CMD_RESOURCE_CREATE_2D) {
    virtio_gpu_resource_create_2d c;
    if (Load(req, c)) {
      absl::MutexLock lock(&mu3d_);
      uint64_t bytes = uint64_t{c.width} * c.height * 4;
      if (resources3d_.count(c.resource_id)) {
        return gpu_wire::Respond(h, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, {});
      }
      if (Bytes3d() + bytes > limits_.max_host_bytes - gpu_.stats().host_bytes) {
        return gpu_wire::Respond(h, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY, {});
      }
    }
  }
  std::vector<uint8_t> resp = gpu_.Execute(req);
  if (h.type == VIRTIO_GPU_CMD_SET_SCANOUT && TypeOf(resp) == VIRTIO_GPU_RESP_OK_NODATA) {
    absl::MutexLock lock(&mu3d_);
    scanout3d_ = {};  // scanout 0 shows a 2D resource now, or nothing
  }
  return resp;
}

std::vector<uint8_t> Gpu::Route3d(uint32_t type, std::span<const uint8_t> req) {
  virtio_gpu_resource_create_3d c{};
  uint64_t bytes = 0;
  if (type == VIRTIO_GPU_CMD_RESOURCE_CREATE_3D && Load(req, c)) {
    // One id space and one memory limit for 2D and 3D resources.
    if (gpu_.HasResource(c.resource_id)) {
      return gpu_wire::Respond(c.hdr, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, {});
    }
    bytes = Resource3dBytes(c.target, c.width, c.height, c.depth, c.array_size, c.last_level,
                            c.nr_samples);
    absl::MutexLock lock(&mu3d_);
    if (bytes != 0 && Bytes3d() + bytes > limits_.max_host_bytes - gpu_.stats().host_bytes) {
      return gpu_wire::Respond(c.hdr, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY, {});
    }
  }
  std::vector<uint8_t> resp = renderer_->Execute(req);
  if (type == VIRTIO_GPU_CMD_RESOURCE_CREATE_3D && TypeOf(resp) == VIRTIO_GPU_RESP_OK_NODATA) {
    absl::MutexLock lock(&mu3d_);
    resources3d_[c.resource_id] = {c.width, c.height, bytes};
  }
  return resp;
}

uint32_t Gpu::Scanout3dCommand(uint32_t type, uint32_t id, std::span<const uint8_t> req) {
  absl::MutexLock lock(&mu3d_);
  const Resource3d& res = resources3d_.at(id);
  if (type == VIRTIO_GPU_CMD_RESOURCE_FLUSH) {
    virtio_gpu_resource_flush f;
    if (!Load(req, f)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
    return Inside(f.r, res.width, res.height) ? VIRTIO_GPU_RESP_OK_NODATA
                                              : VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  virtio_gpu_set_scanout s;
  if (!Load(req, s)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (s.scanout_id >= Gpu2d::kNumScanouts) return VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID;
  if (s.r.width == 0 || s.r.height == 0 || !Inside(s.r, res.width, res.height)) {
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  virtio_gpu_set_scanout off{};  // the 2D side lets go of the scanout
  off.hdr.type = VIRTIO_GPU_CMD_SET_SCANOUT;
  off.scanout_id = s.scanout_id;
  gpu_.Execute(gpu_wire::Bytes(off));
  scanout3d_ = {id, s.r.x, s.r.y, s.r.width, s.r.height};
  return VIRTIO_GPU_RESP_OK_NODATA;
}

}  // namespace virtio
