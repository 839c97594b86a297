#include "block/raw.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"

namespace block {

absl::Status RawImage::Create(const std::string& path, uint64_t size) {
  ASSIGN_OR_RETURN(File f, File::Open(path, {.create = true}));
  return f.Truncate(size);
}

absl::StatusOr<std::unique_ptr<RawImage>> RawImage::Open(
    const std::string& path, const OpenOptions& options) {
  ASSIGN_OR_RETURN(File f, File::Open(path, {.read_only = options.read_only,
                                             .direct = options.direct}));
  ASSIGN_OR_RETURN(uint64_t size, f.Size());
  return std::unique_ptr<RawImage>(new RawImage(std::move(f), size));
}

Capabilities RawImage::capabilities() const {
  return {.read_only = file_.read_only(), .discard = true, .write_zeroes = true};
}

absl::Status RawImage::ReadV(uint64_t offset, std::span<const iovec> iov) {
  RETURN_IF_ERROR(CheckRange(offset, IovLength(iov)));
  return file_.PReadV(iov, offset);
}

absl::Status RawImage::WriteV(uint64_t offset, std::span<const iovec> iov) {
  RETURN_IF_ERROR(CheckRange(offset, IovLength(iov)));
  return file_.PWriteV(iov, offset);
}

absl::Status RawImage::Flush() { return file_.DataSync(); }

absl::Status RawImage::Discard(uint64_t offset, uint64_t len) {
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (file_.read_only()) return absl::PermissionDeniedError("read-only image");
  return file_.PunchHole(offset, len);
}

absl::Status RawImage::WriteZeroes(uint64_t offset, uint64_t len) {
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (file_.read_only()) return absl::PermissionDeniedError("read-only image");
  return file_.ZeroRange(offset, len);
}

absl::StatusOr<Extent> RawImage::BlockStatus(uint64_t offset, uint64_t len) {
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (len == 0) return Extent{ExtentKind::kData, 0};
  off_t data = ::lseek(file_.fd(), static_cast<off_t>(offset), SEEK_DATA);
  if (data < 0) {
    if (errno == ENXIO) return Extent{ExtentKind::kZero, len};  // hole to EOF
    return Extent{ExtentKind::kData, len};  // no SEEK_DATA: assume data
  }
  if (static_cast<uint64_t>(data) > offset) {
    return Extent{ExtentKind::kZero,
                  std::min<uint64_t>(len, static_cast<uint64_t>(data) - offset)};
  }
  off_t hole = ::lseek(file_.fd(), static_cast<off_t>(offset), SEEK_HOLE);
  if (hole < 0 || static_cast<uint64_t>(hole) <= offset) {
    return Extent{ExtentKind::kData, len};
  }
  return Extent{ExtentKind::kData,
                std::min<uint64_t>(len, static_cast<uint64_t>(hole) - offset)};
}

std::optional<DirectMapping> RawImage::MapDirect(uint64_t offset, uint64_t len,
                                                bool write) {
  if (len == 0 || !CheckRange(offset, len).ok() || (write && file_.read_only())) {
    return std::nullopt;
  }
  DirectMapping m;
  m.extents.push_back({&file_, offset, len});
  return m;
}

absl::Status RawImage::Resize(uint64_t new_size) {
  if (file_.read_only()) return absl::PermissionDeniedError("read-only image");
  RETURN_IF_ERROR(file_.Truncate(new_size));
  size_ = new_size;
  return absl::OkStatus();
}

}  // namespace block
