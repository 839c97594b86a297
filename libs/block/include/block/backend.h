// BlockBackend: the asynchronous block device interface a virtio-blk (or
// anything else) submits requests to.
//
// Requests complete out of order through a callback that runs exactly once,
// on the backend's completion thread (never inside Submit). A flush covers
// every write that completed before the flush was submitted. The caller
// keeps the buffers alive until the callback runs. Destroying a backend waits
// for the requests still in flight.
//
// Two engines over a synchronous Image. io_uring (liburing): reads and
// writes the image can map to host extents (Image::MapDirect: allocated data,
// holes, backing files, in-place overwrites) go to the ring; the rest
// (allocating writes, compressed clusters, flush, discard, write-zeroes)
// runs on a thread pool beside it. Threads: everything on the pool, where
// io_uring is unavailable or asked for.
//
//   ASSIGN_OR_RETURN(auto disk, block::OpenBackend("disk.raw", {}));
//   std::vector<char> buf(4096);
//   block::Request req = block::Request::Read(0, buf.data(), buf.size());
//   disk->Submit(std::move(req), [](absl::Status s) { /* done */ });
#ifndef KINDLING_BLOCK_BACKEND_H_
#define KINDLING_BLOCK_BACKEND_H_

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "block/image.h"

namespace block {

enum class RequestType { kRead, kWrite, kFlush, kDiscard, kWriteZeroes };

struct Request {
  RequestType type = RequestType::kRead;
  uint64_t offset = 0;
  uint64_t length = 0;       // bytes; for read/write the iovecs' total
  std::vector<iovec> iov;    // read/write only

  static Request Read(uint64_t offset, void* buf, size_t len);
  static Request Write(uint64_t offset, const void* buf, size_t len);
  static Request ReadV(uint64_t offset, std::vector<iovec> iov);
  static Request WriteV(uint64_t offset, std::vector<iovec> iov);
  static Request Flush();
  static Request Discard(uint64_t offset, uint64_t len);
  static Request WriteZeroes(uint64_t offset, uint64_t len);
};

using Completion = std::function<void(absl::Status)>;

// Where requests went (for tests and metrics).
struct BackendStats {
  uint64_t direct_requests = 0;  // mapped: the ring did the I/O (or none needed)
  uint64_t pool_requests = 0;    // ran on the thread pool over the Image
  uint64_t inline_requests = 0;  // done by TryWithoutBlocking
};

class BlockBackend {
 public:
  virtual ~BlockBackend() = default;
  virtual uint64_t size() const = 0;
  virtual Capabilities capabilities() const = 0;
  // "io_uring" or "threads".
  virtual std::string_view engine() const = 0;
  virtual void Submit(Request req, Completion done) = 0;
  // Runs a read or write at once, on the caller's thread, when that cannot
  // block: the image maps it to host extents whose pages are in the page
  // cache (preadv2/pwritev2 with RWF_NOWAIT). Returns its status then, or
  // nullopt when it would block, does not map or is not a read or write:
  // Submit it instead (a write tried in part is simply written again).
  // Calls no completion. A device whose data is mostly cached saves the
  // hand-off to another thread and back.
  virtual std::optional<absl::Status> TryWithoutBlocking(const Request& req);
  virtual BackendStats stats() const = 0;
};

enum class Engine { kAuto, kIoUring, kThreads };

struct BackendOptions {
  OpenOptions open;
  Engine engine = Engine::kAuto;
  unsigned queue_depth = 128;  // io_uring ring size
  unsigned threads = 16;       // thread-pool workers (both engines)
};

// True when this kernel lets us create an io_uring.
bool IoUringAvailable();

// Any Image on io_uring (with `options.threads` pool workers for what does
// not map). FailedPrecondition if io_uring is unavailable.
absl::StatusOr<std::unique_ptr<BlockBackend>> CreateUringBackend(
    std::unique_ptr<Image> image, const BackendOptions& options);

// Any Image on a pool of worker threads.
std::unique_ptr<BlockBackend> CreateThreadPoolBackend(
    std::unique_ptr<Image> image, unsigned threads);

// Opens an image (probing the format) on the best engine: io_uring when
// available (NBD: always the thread pool), the thread pool otherwise.
absl::StatusOr<std::unique_ptr<BlockBackend>> OpenBackend(
    const std::string& path, const BackendOptions& options);

// Runs `req` synchronously on `image` (what the thread-pool engine does).
absl::Status ExecuteOnImage(Image& image, const Request& req);

// Blocking calls over a BlockBackend, for tools and tests.
class SyncBackend {
 public:
  explicit SyncBackend(BlockBackend& backend) : backend_(backend) {}
  absl::Status Run(Request req);
  absl::Status Read(uint64_t offset, void* buf, size_t len);
  absl::Status Write(uint64_t offset, const void* buf, size_t len);
  absl::Status Flush();
  absl::Status Discard(uint64_t offset, uint64_t len);
  absl::Status WriteZeroes(uint64_t offset, uint64_t len);

 private:
  BlockBackend& backend_;
};

}  // namespace block

#endif  // KINDLING_BLOCK_BACKEND_H_
