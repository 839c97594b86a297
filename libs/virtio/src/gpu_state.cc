// Gpu2d's snapshot half: saving its resources, and loading a saved set
// back with every value checked as the requests that made it were.
#include <linux/virtio_gpu.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "virtio/gpu_2d.h"

namespace virtio {
namespace {

absl::Status Bad(uint32_t id, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("virtio-gpu resource ", id, ": ", what));
}

}  // namespace

GpuState Gpu2d::SaveState() const {
  absl::MutexLock lock(&mu_);
  GpuState s;
  for (const auto& [id, r] : resources_) {
    GpuResourceState rs{id, r.format, r.width, r.height, r.pixels, r.has_backing, {}};
    for (const Entry& e : r.backing) rs.backing.emplace_back(e.addr, e.len);
    s.resources.push_back(std::move(rs));
  }
  const Scanout& sc = scanouts_[0];
  s.scanout_resource = sc.resource_id;
  s.scanout_x = sc.r.x;
  s.scanout_y = sc.r.y;
  s.scanout_width = sc.r.width;
  s.scanout_height = sc.r.height;
  s.cursor_resource = cursor_.resource_id;
  s.cursor_x = cursor_.x;
  s.cursor_y = cursor_.y;
  s.cursor_hot_x = cursor_.hot_x;
  s.cursor_hot_y = cursor_.hot_y;
  return s;
}

absl::Status Gpu2d::RestoreState(GpuState state) {
  absl::MutexLock lock(&mu_);
  Clear();
  absl::Status s = LoadState(state);
  if (!s.ok()) Clear();
  return s;
}

void Gpu2d::Clear() {
  resources_.clear();
  scanouts_ = {};
  cursor_ = {};
  stats_.resources = 0;
  stats_.host_bytes = 0;
}

absl::Status Gpu2d::LoadState(GpuState& state) {
  if (state.resources.size() > kMaxResources) {
    return absl::InvalidArgumentError(absl::StrCat(
        "virtio-gpu: ", state.resources.size(), " resources, at most ", kMaxResources));
  }
  for (GpuResourceState& r : state.resources) RETURN_IF_ERROR(LoadResource(r));
  if (state.scanout_resource != 0) {
    const Resource* res = Find(state.scanout_resource);
    virtio_gpu_rect r{state.scanout_x, state.scanout_y, state.scanout_width,
                      state.scanout_height};
    if (!res || r.width == 0 || r.height == 0 || uint64_t{r.x} + r.width > res->width ||
        uint64_t{r.y} + r.height > res->height) {
      return absl::InvalidArgumentError(absl::StrCat(
          "virtio-gpu: scanout 0 shows ", r.width, "x", r.height, " at ", r.x, ",", r.y,
          " of resource ", state.scanout_resource, ", which does not hold it"));
    }
    scanouts_[0] = {state.scanout_resource, {r.x, r.y, r.width, r.height}};
  }
  if (state.cursor_resource != 0 && !Find(state.cursor_resource)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "virtio-gpu: the cursor's resource ", state.cursor_resource, " does not exist"));
  }
  cursor_ = {state.cursor_resource, state.cursor_x, state.cursor_y, state.cursor_hot_x,
             state.cursor_hot_y};
  return absl::OkStatus();
}

absl::Status Gpu2d::LoadResource(GpuResourceState& r) {
  if (r.id == 0 || Find(r.id)) return Bad(r.id, "id 0 or a duplicate");
  if (!SupportedFormat(r.format)) return Bad(r.id, absl::StrCat("format ", r.format));
  if (r.width == 0 || r.height == 0 || r.width > kMaxDimension || r.height > kMaxDimension) {
    return Bad(r.id, absl::StrCat("size ", r.width, "x", r.height));
  }
  const uint64_t bytes = uint64_t{r.width} * r.height * 4;
  if (bytes > limits_.max_host_bytes - stats_.host_bytes) {
    return Bad(r.id, absl::StrCat("does not fit the device's ", limits_.max_host_bytes >> 20,
                                  " MiB of host memory"));
  }
  if (r.pixels.size() != bytes) {
    return Bad(r.id, absl::StrCat(r.pixels.size(), " bytes of pixels, not ", bytes));
  }
  if (r.backing.size() > kMaxBackingEntries || (!r.has_backing && !r.backing.empty()) ||
      (r.has_backing && r.backing.empty())) {
    return Bad(r.id, absl::StrCat(r.backing.size(), " backing entries"));
  }
  std::vector<Entry> entries;
  for (const auto& [addr, len] : r.backing) {
    entries.push_back({addr, len});
    if (!InGuestRam(entries.back())) {
      return Bad(r.id, absl::StrCat("backing ", len, " bytes at ", absl::Hex(addr),
                                    " is not guest RAM"));
    }
  }
  Resource res;
  res.format = r.format;
  res.width = r.width;
  res.height = r.height;
  res.pixels = std::move(r.pixels);
  if (r.has_backing) SetBacking(res, std::move(entries));
  resources_.emplace(r.id, std::move(res));
  stats_.host_bytes += bytes;
  stats_.resources = resources_.size();
  return absl::OkStatus();
}

}  // namespace virtio
