#include "libs/block/src/backend_internal.h"

#include <errno.h>
#include <limits.h>
#include <sys/uio.h>

#include "absl/strings/str_format.h"
#include "block/file.h"

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

namespace {

// One extent's part of the request, if it cannot block: RWF_NOWAIT where
// the file system takes it; where it does not (EOPNOTSUPP, remembered in
// `nowait`), a plain call on a memory-backed file (never waits for a disk)
// or, for a write, through the page cache (it waits only when the kernel
// throttles dirty pages, as it would any writer). True when all of it was
// transferred.
bool TransferNoWait(const HostExtent& e, std::span<const iovec> iov, bool write,
                    std::atomic<bool>& nowait) {
  const File& f = *e.file;
  const int fd = f.FdFor(iov, e.offset);
  const int n = static_cast<int>(iov.size());
  ssize_t done = -1;
  if (nowait.load(std::memory_order_relaxed)) {
    done = write ? pwritev2(fd, iov.data(), n, e.offset, RWF_NOWAIT)
                 : preadv2(fd, iov.data(), n, e.offset, RWF_NOWAIT);
    if (done >= 0 || errno != EOPNOTSUPP) return done == static_cast<ssize_t>(e.length);
    nowait.store(false, std::memory_order_relaxed);
  }
  const bool buffered = fd == f.fd() && !f.direct();
  if (!f.memory_backed() && !(write && buffered)) return false;
  done = write ? pwritev(fd, iov.data(), n, e.offset) : preadv(fd, iov.data(), n, e.offset);
  return done == static_cast<ssize_t>(e.length);
}

}  // namespace

std::optional<absl::Status> TryImageWithoutBlocking(Image& image, const Request& req,
                                                    NoWaitSupport& nowait) {
  const bool write = req.type == RequestType::kWrite;
  if (req.type != RequestType::kRead && !write) return std::nullopt;
  const Request& r = req;
  // Anything odd goes to Submit, which says what is wrong with it.
  if (r.length == 0 || r.length != IovLength(r.iov) || !ValidateRequest(image, r).ok()) {
    return std::nullopt;
  }
  std::optional<DirectMapping> map = image.MapDirect(r.offset, r.length, write);
  if (!map) return std::nullopt;
  uint64_t pos = 0;
  for (const HostExtent& e : map->extents) {
    if (write && e.file == nullptr) return std::nullopt;  // a write must land in a file
    pos += e.length;
  }
  if (pos != r.length) return std::nullopt;
  pos = 0;
  for (const HostExtent& e : map->extents) {
    std::vector<iovec> slice = IovSlice(r.iov, pos, e.length);
    pos += e.length;
    if (e.file == nullptr) {
      IovZero(slice);
    } else if (!TransferNoWait(e, slice, write, write ? nowait.writes : nowait.reads)) {
      return std::nullopt;
    }
  }
  return absl::OkStatus();
}

}  // namespace block
