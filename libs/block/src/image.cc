#include "block/image.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace block {

absl::StatusOr<Extent> Image::BlockStatus(uint64_t offset, uint64_t len) {
  if (auto s = CheckRange(offset, len); !s.ok()) return s;
  return Extent{ExtentKind::kData, len};
}

absl::Status Image::Resize(uint64_t) {
  return absl::UnimplementedError(
      absl::StrFormat("%s images cannot be resized", format()));
}

std::optional<DirectMapping> Image::MapDirect(uint64_t, uint64_t, bool) {
  return std::nullopt;
}

void DirectMapping::Append(DirectMapping&& other) {
  for (const HostExtent& e : other.extents) AppendExtent(extents, e);
  other.extents.clear();
  if (!other.release) return;
  if (!release) {
    release = std::exchange(other.release, nullptr);
    return;
  }
  release = [a = std::move(release), b = std::exchange(other.release, nullptr)] {
    a();
    b();
  };
}

absl::Status ReadBacking(Image* backing, uint64_t backing_size, uint64_t offset,
                         std::span<const iovec> out) {
  const uint64_t len = IovLength(out);
  uint64_t in = 0;
  if (backing != nullptr && offset < backing_size) {
    in = std::min(len, backing_size - offset);
    if (auto s = backing->ReadV(offset, IovSlice(out, 0, in)); !s.ok()) return s;
  }
  if (in < len) IovZero(IovSlice(out, in, len - in));
  return absl::OkStatus();
}

bool MapBacking(Image* backing, uint64_t backing_size, uint64_t offset, uint64_t len,
                DirectMapping& m) {
  uint64_t in = 0;
  if (backing != nullptr && offset < backing_size) {
    in = std::min(len, backing_size - offset);
    auto b = backing->MapDirect(offset, in, false);
    if (!b) return false;
    m.Append(std::move(*b));
  }
  AppendExtent(m.extents, {nullptr, 0, len - in});
  return true;
}

void AppendExtent(std::vector<HostExtent>& extents, const HostExtent& e) {
  if (e.length == 0) return;
  if (!extents.empty()) {
    HostExtent& last = extents.back();
    if (last.file == e.file &&
        (e.file == nullptr || last.offset + last.length == e.offset)) {
      last.length += e.length;
      return;
    }
  }
  extents.push_back(e);
}

absl::Status Image::CheckRange(uint64_t offset, uint64_t len) const {
  const uint64_t disk = size();
  if (offset > disk || len > disk - offset) {
    return absl::OutOfRangeError(absl::StrFormat(
        "%s request [0x%x, +0x%x) is outside the %u-byte disk", format(),
        offset, len, disk));
  }
  return absl::OkStatus();
}

absl::Status Image::Read(uint64_t offset, void* buf, size_t len) {
  iovec v{buf, len};
  return ReadV(offset, {&v, 1});
}

absl::Status Image::Write(uint64_t offset, const void* buf, size_t len) {
  iovec v{const_cast<void*>(buf), len};
  return WriteV(offset, {&v, 1});
}

uint64_t IovLength(std::span<const iovec> iov) {
  uint64_t n = 0;
  for (const iovec& v : iov) n += v.iov_len;
  return n;
}

std::vector<iovec> IovSlice(std::span<const iovec> iov, uint64_t offset,
                            uint64_t len) {
  std::vector<iovec> out;
  for (const iovec& v : iov) {
    if (len == 0) break;
    if (offset >= v.iov_len) {
      offset -= v.iov_len;
      continue;
    }
    uint64_t n = std::min<uint64_t>(v.iov_len - offset, len);
    out.push_back({static_cast<char*>(v.iov_base) + offset, n});
    offset = 0;
    len -= n;
  }
  return out;
}

void IovZero(std::span<const iovec> iov) {
  for (const iovec& v : iov) memset(v.iov_base, 0, v.iov_len);
}

void IovCopyIn(std::span<const iovec> iov, uint64_t offset, const void* src,
               uint64_t len) {
  const char* p = static_cast<const char*>(src);
  for (const iovec& v : IovSlice(iov, offset, len)) {
    memcpy(v.iov_base, p, v.iov_len);
    p += v.iov_len;
  }
}

void IovCopyOut(std::span<const iovec> iov, uint64_t offset, void* dst,
                uint64_t len) {
  char* p = static_cast<char*>(dst);
  for (const iovec& v : IovSlice(iov, offset, len)) {
    memcpy(p, v.iov_base, v.iov_len);
    p += v.iov_len;
  }
}

}  // namespace block
