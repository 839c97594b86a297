#include "libs/block/src/backend_internal.h"

#include <limits.h>

#include "absl/strings/str_format.h"

namespace block {

absl::Status ValidateRequest(const Image& image, const Request& req) {
  if (req.type == RequestType::kFlush) return absl::OkStatus();
  if (req.type != RequestType::kRead && image.capabilities().read_only) {
    return absl::PermissionDeniedError(
        absl::StrFormat("this %s image is read-only", image.format()));
  }
  const uint64_t size = image.size();
  if (req.offset > size || req.length > size - req.offset) {
    return absl::OutOfRangeError(absl::StrFormat(
        "%s request [0x%x, +0x%x) is outside the %u-byte disk", image.format(),
        req.offset, req.length, size));
  }
  if (req.iov.size() > IOV_MAX) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%u iovecs in one request; at most %d", req.iov.size(), IOV_MAX));
  }
  return absl::OkStatus();
}

absl::Status ExecuteOnImage(Image& image, const Request& req) {
  switch (req.type) {
    case RequestType::kRead:
      return image.ReadV(req.offset, req.iov);
    case RequestType::kWrite:
      return image.WriteV(req.offset, req.iov);
    case RequestType::kFlush:
      return image.Flush();
    case RequestType::kDiscard:
      return image.Discard(req.offset, req.length);
    case RequestType::kWriteZeroes:
      return image.WriteZeroes(req.offset, req.length);
  }
  return absl::InvalidArgumentError("unknown request type");
}

}  // namespace block
