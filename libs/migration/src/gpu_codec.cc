#include "migration/gpu_codec.h"

#include <zstd.h>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"

namespace migration {
namespace {

constexpr int kZstdLevel = 3;

absl::Status Invalid(uint32_t id, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("gpu.resources[id ", id, "]: ", why));
}

absl::StatusOr<std::string> Compress(const std::vector<uint8_t>& in) {
  std::string out(ZSTD_compressBound(in.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), kZstdLevel);
  if (ZSTD_isError(n)) {
    return absl::InternalError(absl::StrCat("zstd: ", ZSTD_getErrorName(n)));
  }
  out.resize(n);
  return out;
}

// Exactly `want` bytes out of one zstd frame that says it holds them.
absl::StatusOr<std::vector<uint8_t>> Decompress(uint32_t id, const std::string& in,
                                                uint64_t want) {
  unsigned long long size = ZSTD_getFrameContentSize(in.data(), in.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size != want) {
    return Invalid(id, absl::StrCat("pixels_zstd is not one zstd frame of ", want, " bytes"));
  }
  std::vector<uint8_t> out(want);
  size_t n = ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(n) || n != want) {
    return Invalid(id, absl::StrCat("pixels_zstd: ",
                                    ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short"));
  }
  return out;
}

absl::StatusOr<virtio::GpuResourceState> DecodeResource(const v1::GpuResource& m,
                                                        uint64_t& budget) {
  virtio::GpuResourceState r{m.id(), m.format(), m.width(), m.height(), {}, m.has_backing(), {}};
  const uint32_t kMax = virtio::Gpu2d::kMaxDimension;
  if (r.width == 0 || r.height == 0 || r.width > kMax || r.height > kMax) {
    return Invalid(r.id, absl::StrCat("size ", r.width, "x", r.height, " (1 to ", kMax, ")"));
  }
  const uint64_t bytes = uint64_t{r.width} * r.height * 4;
  if (bytes > budget) {
    return Invalid(r.id, "the resources hold more pixels than the device's memory limit");
  }
  budget -= bytes;
  if (m.backing_size() > static_cast<int>(virtio::Gpu2d::kMaxBackingEntries)) {
    return Invalid(r.id, absl::StrCat(m.backing_size(), " backing entries"));
  }
  for (const v1::GpuBacking& b : m.backing()) r.backing.emplace_back(b.addr(), b.length());
  ASSIGN_OR_RETURN(r.pixels, Decompress(r.id, m.pixels_zstd(), bytes));
  return r;
}

}  // namespace

absl::StatusOr<v1::VirtioGpu> EncodeGpu(const virtio::GpuState& s) {
  v1::VirtioGpu m;
  for (const virtio::GpuResourceState& r : s.resources) {
    v1::GpuResource* p = m.add_resources();
    p->set_id(r.id);
    p->set_format(r.format);
    p->set_width(r.width);
    p->set_height(r.height);
    ASSIGN_OR_RETURN(*p->mutable_pixels_zstd(), Compress(r.pixels));
    p->set_has_backing(r.has_backing);
    for (const auto& [addr, len] : r.backing) {
      v1::GpuBacking* b = p->add_backing();
      b->set_addr(addr);
      b->set_length(len);
    }
  }
  m.set_scanout_resource(s.scanout_resource);
  m.set_scanout_x(s.scanout_x);
  m.set_scanout_y(s.scanout_y);
  m.set_scanout_width(s.scanout_width);
  m.set_scanout_height(s.scanout_height);
  m.set_cursor_resource(s.cursor_resource);
  m.set_cursor_x(s.cursor_x);
  m.set_cursor_y(s.cursor_y);
  m.set_cursor_hot_x(s.cursor_hot_x);
  m.set_cursor_hot_y(s.cursor_hot_y);
  return m;
}

absl::StatusOr<virtio::GpuState> DecodeGpu(const v1::VirtioGpu& m, uint64_t max_pixel_bytes) {
  if (m.resources_size() > static_cast<int>(virtio::Gpu2d::kMaxResources)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gpu.resources: ", m.resources_size(), ", at most ", virtio::Gpu2d::kMaxResources));
  }
  virtio::GpuState s;
  uint64_t budget = max_pixel_bytes;
  for (const v1::GpuResource& r : m.resources()) {
    ASSIGN_OR_RETURN(virtio::GpuResourceState rs, DecodeResource(r, budget));
    s.resources.push_back(std::move(rs));
  }
  s.scanout_resource = m.scanout_resource();
  s.scanout_x = m.scanout_x();
  s.scanout_y = m.scanout_y();
  s.scanout_width = m.scanout_width();
  s.scanout_height = m.scanout_height();
  s.cursor_resource = m.cursor_resource();
  s.cursor_x = m.cursor_x();
  s.cursor_y = m.cursor_y();
  s.cursor_hot_x = m.cursor_hot_x();
  s.cursor_hot_y = m.cursor_hot_y();
  return s;
}

}  // namespace migration
