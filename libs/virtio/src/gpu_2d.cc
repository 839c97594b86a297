#include "virtio/gpu_2d.h"

#include <linux/virtio_gpu.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "gpu_wire.h"

namespace virtio {
namespace {

constexpr uint32_t kBytesPerPixel = 4;

// Where R, G and B sit in a pixel's 4 bytes, by format: the virtio names
// give the byte order in memory (B8G8R8X8: blue first).
struct FormatInfo {
  uint32_t format;
  uint8_t r, g, b;
};
constexpr FormatInfo kFormats[] = {
    {VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 2, 1, 0}, {VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 2, 1, 0},
    {VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM, 1, 2, 3}, {VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM, 1, 2, 3},
    {VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, 0, 1, 2}, {VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM, 0, 1, 2},
    {VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM, 3, 2, 1}, {VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM, 3, 2, 1},
};

const FormatInfo* LookupFormat(uint32_t format) {
  for (const FormatInfo& f : kFormats) {
    if (f.format == format) return &f;
  }
  return nullptr;
}

using gpu_wire::Load;

// Whether the rectangle lies inside a width x height surface (64-bit sums:
// a guest's x + width may wrap in 32 bits).
bool Inside(const virtio_gpu_rect& r, uint32_t width, uint32_t height) {
  return uint64_t{r.x} + r.width <= width && uint64_t{r.y} + r.height <= height;
}

}  // namespace

Gpu2d::Gpu2d(vm_memory::GuestMemory& memory, const GpuLimits& limits)
    : memory_(memory), limits_(limits) {}

bool Gpu2d::SupportedFormat(uint32_t format) { return LookupFormat(format) != nullptr; }

std::vector<uint8_t> Gpu2d::Execute(std::span<const uint8_t> request) {
  virtio_gpu_ctrl_hdr in{};
  std::vector<uint8_t> body;
  uint32_t type = VIRTIO_GPU_RESP_ERR_UNSPEC;
  absl::MutexLock lock(&mu_);
  ++stats_.commands;
  if (Load(request, in)) type = Dispatch(in.type, request, body);
  if (type >= VIRTIO_GPU_RESP_ERR_UNSPEC) {
    ++stats_.errors;
    body.clear();
  }
  // 2D commands are done when they return: the fence goes with the response.
  return gpu_wire::Respond(in, type, body);
}

uint32_t Gpu2d::Dispatch(uint32_t type, std::span<const uint8_t> req,
                         std::vector<uint8_t>& body) {
  switch (type) {
    case VIRTIO_GPU_CMD_GET_DISPLAY_INFO: return DisplayInfo(body);
    case VIRTIO_GPU_CMD_GET_EDID: return Edid(req, body);
    case VIRTIO_GPU_CMD_RESOURCE_CREATE_2D: return CreateResource(req);
    case VIRTIO_GPU_CMD_RESOURCE_UNREF: return Unref(req);
    case VIRTIO_GPU_CMD_SET_SCANOUT: return SetScanout(req);
    case VIRTIO_GPU_CMD_RESOURCE_FLUSH: return Flush(req);
    case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D: return Transfer(req);
    case VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING: return AttachBacking(req);
    case VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING: return DetachBacking(req);
    case VIRTIO_GPU_CMD_UPDATE_CURSOR:
    case VIRTIO_GPU_CMD_MOVE_CURSOR: return UpdateCursor(type, req);
    // No capsets without virgl: there is no index to ask about.
    case VIRTIO_GPU_CMD_GET_CAPSET_INFO:
    case VIRTIO_GPU_CMD_GET_CAPSET: return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
    default: return VIRTIO_GPU_RESP_ERR_UNSPEC;  // 3D, blobs, unknown
  }
}

uint32_t Gpu2d::DisplayInfo(std::vector<uint8_t>& body) const {
  virtio_gpu_resp_display_info info{};
  info.pmodes[0].r.width = limits_.width;
  info.pmodes[0].r.height = limits_.height;
  info.pmodes[0].enabled = 1;
  std::span<const uint8_t> b = gpu_wire::BodyOf(info);
  body.assign(b.begin(), b.end());
  return VIRTIO_GPU_RESP_OK_DISPLAY_INFO;
}

uint32_t Gpu2d::Edid(std::span<const uint8_t> req, std::vector<uint8_t>& body) const {
  virtio_gpu_cmd_get_edid cmd;
  if (!limits_.edid) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (cmd.scanout >= kNumScanouts) return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  virtio_gpu_resp_edid resp{};
  std::array<uint8_t, 128> edid = BuildEdid(limits_.width, limits_.height);
  resp.size = edid.size();
  std::copy(edid.begin(), edid.end(), resp.edid);
  std::span<const uint8_t> b = gpu_wire::BodyOf(resp);
  body.assign(b.begin(), b.end());
  return VIRTIO_GPU_RESP_OK_EDID;
}

Gpu2d::Resource* Gpu2d::Find(uint32_t id) {
  auto it = resources_.find(id);
  return it == resources_.end() ? nullptr : &it->second;
}

uint32_t Gpu2d::CreateResource(std::span<const uint8_t> req) {
  virtio_gpu_resource_create_2d cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (cmd.resource_id == 0 || Find(cmd.resource_id)) return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  if (!SupportedFormat(cmd.format)) return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  if (cmd.width == 0 || cmd.height == 0 || cmd.width > kMaxDimension ||
      cmd.height > kMaxDimension) {
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  const uint64_t bytes = uint64_t{cmd.width} * cmd.height * kBytesPerPixel;
  if (resources_.size() >= kMaxResources || bytes > limits_.max_host_bytes - stats_.host_bytes) {
    return VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY;
  }
  Resource& r = resources_[cmd.resource_id];
  r.format = cmd.format;
  r.width = cmd.width;
  r.height = cmd.height;
  r.pixels.assign(bytes, 0);
  stats_.host_bytes += bytes;
  stats_.resources = resources_.size();
  return VIRTIO_GPU_RESP_OK_NODATA;
}

uint32_t Gpu2d::Unref(std::span<const uint8_t> req) {
  virtio_gpu_resource_unref cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  auto it = resources_.find(cmd.resource_id);
  if (it == resources_.end()) return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  // A scanout showing it goes dark, as a display whose buffer is freed.
  for (Scanout& s : scanouts_) {
    if (s.resource_id == cmd.resource_id) s = Scanout{};
  }
  if (cursor_.resource_id == cmd.resource_id) cursor_.resource_id = 0;
  stats_.host_bytes -= it->second.pixels.size();
  resources_.erase(it);
  stats_.resources = resources_.size();
  return VIRTIO_GPU_RESP_OK_NODATA;
}

uint32_t Gpu2d::SetScanout(std::span<const uint8_t> req) {
  virtio_gpu_set_scanout cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (cmd.scanout_id >= kNumScanouts) return VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID;
  Scanout& s = scanouts_[cmd.scanout_id];
  if (cmd.resource_id == 0) {  // the driver turns the output off
    s = Scanout{};
    return VIRTIO_GPU_RESP_OK_NODATA;
  }
  const Resource* res = Find(cmd.resource_id);
  if (!res) return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  if (cmd.r.width == 0 || cmd.r.height == 0 || !Inside(cmd.r, res->width, res->height)) {
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  s.resource_id = cmd.resource_id;
  s.r = {cmd.r.x, cmd.r.y, cmd.r.width, cmd.r.height};
  return VIRTIO_GPU_RESP_OK_NODATA;
}

uint32_t Gpu2d::Flush(std::span<const uint8_t> req) {
  virtio_gpu_resource_flush cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  const Resource* res = Find(cmd.resource_id);
  if (!res) return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  if (!Inside(cmd.r, res->width, res->height)) return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  // Headless: the scanout reads the resource itself when asked, so a
  // flush has nothing to copy; it is counted (what a display would show).
  ++stats_.flushes;
  return VIRTIO_GPU_RESP_OK_NODATA;
}

bool Gpu2d::ReadBacking(const Resource& res, uint64_t offset, std::span<uint8_t> out) const {
  if (offset > res.backing_len || out.size() > res.backing_len - offset) return false;
  // The entry holding `offset`: the last one starting at or before it
  // (a binary search: a row is one lookup, however many entries).
  auto it = std::upper_bound(res.starts.begin(), res.starts.end(), offset);
  size_t i = static_cast<size_t>(it - res.starts.begin()) - 1;
  uint64_t within = offset - res.starts[i];
  for (size_t done = 0; done < out.size(); ++i, within = 0) {
    const Entry& e = res.backing[i];
    size_t n = std::min<uint64_t>(e.len - within, out.size() - done);
    if (!memory_.Read(vm_memory::GuestAddress(e.addr + within), out.subspan(done, n)).ok()) {
      return false;
    }
    done += n;
  }
  return true;
}

uint32_t Gpu2d::Transfer(std::span<const uint8_t> req) {
  virtio_gpu_transfer_to_host_2d cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  Resource* res = Find(cmd.resource_id);
  if (!res) return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  if (!res->has_backing) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (!Inside(cmd.r, res->width, res->height)) return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  // Row h of the box comes from offset + h * stride of the backing (the
  // offset names the box's first pixel), as QEMU and Linux have it.
  const uint64_t stride = uint64_t{res->width} * kBytesPerPixel;
  const uint64_t row = uint64_t{cmd.r.width} * kBytesPerPixel;
  if (cmd.r.x == 0 && cmd.r.width == res->width) {  // whole rows: one copy
    std::span<uint8_t> out(res->pixels.data() + cmd.r.y * stride, cmd.r.height * stride);
    if (!ReadBacking(*res, cmd.offset, out)) return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
    ++stats_.transfers;
    return VIRTIO_GPU_RESP_OK_NODATA;
  }
  for (uint32_t h = 0; h < cmd.r.height; ++h) {
    uint64_t dst = (uint64_t{cmd.r.y} + h) * stride + uint64_t{cmd.r.x} * kBytesPerPixel;
    std::span<uint8_t> out(res->pixels.data() + dst, row);
    if (cmd.offset > res->backing_len || !ReadBacking(*res, cmd.offset + h * stride, out)) {
      return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
    }
  }
  ++stats_.transfers;
  return VIRTIO_GPU_RESP_OK_NODATA;
}

uint32_t Gpu2d::AttachBacking(std::span<const uint8_t> req) {
  virtio_gpu_resource_attach_backing cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  Resource* res = Find(cmd.resource_id);
  if (!res) return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  if (res->has_backing) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  // A backing that cannot be mapped is ERR_UNSPEC, as QEMU answers it.
  if (cmd.nr_entries == 0 || cmd.nr_entries > kMaxBackingEntries ||
      (req.size() - sizeof(cmd)) / sizeof(virtio_gpu_mem_entry) < cmd.nr_entries) {
    return VIRTIO_GPU_RESP_ERR_UNSPEC;
  }
  std::vector<Entry> entries;
  for (uint32_t i = 0; i < cmd.nr_entries; ++i) {
    virtio_gpu_mem_entry e;
    std::memcpy(&e, req.data() + sizeof(cmd) + i * sizeof(e), sizeof(e));
    entries.push_back({e.addr, e.length});
    if (!InGuestRam(entries.back())) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  }
  SetBacking(*res, std::move(entries));
  return VIRTIO_GPU_RESP_OK_NODATA;
}

bool Gpu2d::InGuestRam(const Entry& e) const {
  return e.len != 0 && memory_.CheckRange(vm_memory::GuestAddress(e.addr), e.len);
}

void Gpu2d::SetBacking(Resource& res, std::vector<Entry> entries) {
  res.starts.clear();
  res.backing_len = 0;
  for (const Entry& e : entries) {
    res.starts.push_back(res.backing_len);
    res.backing_len += e.len;
  }
  res.backing = std::move(entries);
  res.has_backing = true;
}

uint32_t Gpu2d::DetachBacking(std::span<const uint8_t> req) {
  virtio_gpu_resource_detach_backing cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  Resource* res = Find(cmd.resource_id);
  if (!res) return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  if (!res->has_backing) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  res->backing.clear();
  res->starts.clear();
  res->backing_len = 0;
  res->has_backing = false;
  return VIRTIO_GPU_RESP_OK_NODATA;
}

uint32_t Gpu2d::UpdateCursor(uint32_t type, std::span<const uint8_t> req) {
  virtio_gpu_update_cursor cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (cmd.pos.scanout_id >= kNumScanouts) return VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID;
  if (type == VIRTIO_GPU_CMD_UPDATE_CURSOR) {
    if (cmd.resource_id != 0 && !Find(cmd.resource_id)) {
      return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
    }
    cursor_.resource_id = cmd.resource_id;
    cursor_.hot_x = cmd.hot_x;
    cursor_.hot_y = cmd.hot_y;
  }
  cursor_.x = cmd.pos.x;
  cursor_.y = cmd.pos.y;
  return VIRTIO_GPU_RESP_OK_NODATA;
}

absl::StatusOr<GpuImage> Gpu2d::Screenshot(uint32_t scanout) const {
  if (scanout >= kNumScanouts) {
    return absl::NotFoundError(
        absl::StrCat("scanout ", scanout, ": the device has ", kNumScanouts));
  }
  absl::MutexLock lock(&mu_);
  const Scanout& s = scanouts_[scanout];
  auto it = resources_.find(s.resource_id);
  if (s.resource_id == 0 || it == resources_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("scanout ", scanout, " shows nothing: the guest has not set it"));
  }
  const Resource& res = it->second;
  const uint64_t stride = uint64_t{res.width} * kBytesPerPixel;
  const uint8_t* first = res.pixels.data() + s.r.y * stride + uint64_t{s.r.x} * kBytesPerPixel;
  return PixelsToRgb(res.format, first, stride, s.r.width, s.r.height);
}

GpuImage PixelsToRgb(uint32_t format, const uint8_t* first, uint64_t stride, uint32_t width,
                     uint32_t height) {
  const FormatInfo& f = *LookupFormat(format);
  GpuImage img{width, height, {}};
  img.rgb.resize(uint64_t{width} * height * 3);
  uint8_t* out = img.rgb.data();
  for (uint32_t y = 0; y < height; ++y) {
    const uint8_t* px = first + y * stride;
    for (uint32_t x = 0; x < width; ++x, px += kBytesPerPixel) {
      *out++ = px[f.r];
      *out++ = px[f.g];
      *out++ = px[f.b];
    }
  }
  return img;
}

void Gpu2d::Reset() {
  absl::MutexLock lock(&mu_);
  Clear();
}

bool Gpu2d::HasResource(uint32_t id) const {
  absl::MutexLock lock(&mu_);
  return resources_.count(id) != 0;
}

GpuStats Gpu2d::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace virtio
