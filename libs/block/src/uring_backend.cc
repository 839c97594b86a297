// BlockBackend for raw files on io_uring: one ring, submissions under a
// mutex from any thread, one reaper thread that runs the completions.
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <liburing.h>
#include <string.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/str_format.h"
#include "block/backend.h"
#include "block/file.h"
#include "kindling/status_macros.h"

namespace block {
namespace {

struct Op {
  Request req;
  Completion done;
  absl::Status early;  // set when the request fails before reaching the ring
};

class UringBackend : public BlockBackend {
 public:
  static absl::StatusOr<std::unique_ptr<BlockBackend>> Create(
      const std::string& path, const BackendOptions& options) {
    ASSIGN_OR_RETURN(File f, File::Open(path, {.read_only = options.open.read_only,
                                               .direct = options.open.direct}));
    ASSIGN_OR_RETURN(uint64_t size, f.Size());
    auto b = std::unique_ptr<UringBackend>(new UringBackend(std::move(f), size));
    unsigned depth = options.queue_depth ? options.queue_depth : 128;
    int r = io_uring_queue_init(depth, &b->ring_, 0);
    if (r < 0) {
      return absl::FailedPreconditionError(
          absl::StrFormat("io_uring_queue_init(%u): %s", depth, strerror(-r)));
    }
    b->ring_ok_ = true;
    b->depth_ = depth;
    b->reaper_ = std::thread([p = b.get()] { p->Reap(); });
    return std::unique_ptr<BlockBackend>(std::move(b));
  }

  ~UringBackend() override {
    if (!ring_ok_) return;
    {
      std::unique_lock<std::mutex> lock(mu_);
      idle_.wait(lock, [this] { return inflight_ == 0 && pending_.empty(); });
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data(sqe, nullptr);  // the stop marker
      io_uring_submit(&ring_);
    }
    reaper_.join();
    io_uring_queue_exit(&ring_);
  }

  uint64_t size() const override { return size_; }
  Capabilities capabilities() const override {
    return {.read_only = file_.read_only(), .discard = true, .write_zeroes = true};
  }
  std::string_view engine() const override { return "io_uring"; }

  void Submit(Request req, Completion done) override {
    auto op = std::make_unique<Op>();
    op->req = std::move(req);
    op->done = std::move(done);
    op->early = Validate(op->req);
    std::lock_guard<std::mutex> lock(mu_);
    if (inflight_ >= depth_) {
      pending_.push_back(std::move(op));
      return;
    }
    Prepare(std::move(op));
    io_uring_submit(&ring_);
  }

 private:
  UringBackend(File file, uint64_t size) : file_(std::move(file)), size_(size) {}

  absl::Status Validate(Request& req) const {
    if (req.type == RequestType::kRead || req.type == RequestType::kWrite) {
      req.length = IovLength(req.iov);
    }
    if (req.type == RequestType::kFlush) return absl::OkStatus();
    if (req.type != RequestType::kRead && file_.read_only()) {
      return absl::PermissionDeniedError(
          absl::StrFormat("%s is read-only", file_.name()));
    }
    if (req.offset > size_ || req.length > size_ - req.offset) {
      return absl::OutOfRangeError(absl::StrFormat(
          "%s: request [0x%x, +0x%x) is outside the %u-byte disk",
          file_.name(), req.offset, req.length, size_));
    }
    if (req.iov.size() > IOV_MAX) {
      return absl::InvalidArgumentError("too many iovecs");
    }
    return absl::OkStatus();
  }

  // Requires mu_. Fills one SQE for `op` (caller submits).
  void Prepare(std::unique_ptr<Op> op) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {  // cannot happen: inflight_ < depth_
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    const Request& r = op->req;
    if (!op->early.ok() || (r.length == 0 && r.type != RequestType::kFlush)) {
      io_uring_prep_nop(sqe);
    } else {
      switch (r.type) {
        case RequestType::kRead:
          io_uring_prep_readv(sqe, file_.FdFor(r.iov, r.offset), r.iov.data(),
                              r.iov.size(), r.offset);
          break;
        case RequestType::kWrite:
          io_uring_prep_writev(sqe, file_.FdFor(r.iov, r.offset), r.iov.data(),
                               r.iov.size(), r.offset);
          break;
        case RequestType::kFlush:
          io_uring_prep_fsync(sqe, file_.fd(), IORING_FSYNC_DATASYNC);
          break;
        case RequestType::kDiscard:
          io_uring_prep_fallocate(sqe, file_.fd(),
                                  FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                  r.offset, r.length);
          break;
        case RequestType::kWriteZeroes:
          io_uring_prep_fallocate(sqe, file_.fd(),
                                  FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                                  r.offset, r.length);
          break;
      }
    }
    io_uring_sqe_set_data(sqe, op.release());
    ++inflight_;
  }

  absl::Status Finish(Op& op, int res) {
    if (!op.early.ok()) return op.early;
    const Request& r = op.req;
    if (res < 0) {
      if (r.type == RequestType::kWriteZeroes &&
          (res == -EOPNOTSUPP || res == -EINVAL)) {
        return file_.ZeroRange(r.offset, r.length);  // fallback chain
      }
      return absl::Status(absl::ErrnoToStatusCode(-res),
                          absl::StrFormat("io_uring %s(%s, offset 0x%x, length %u): %s",
                                          OpName(r.type), file_.name(), r.offset,
                                          r.length, strerror(-res)));
    }
    if ((r.type == RequestType::kRead || r.type == RequestType::kWrite) &&
        static_cast<uint64_t>(res) < r.length) {
      // Short transfer (rare): finish the rest synchronously.
      auto rest = IovSlice(r.iov, res, r.length - res);
      return r.type == RequestType::kRead ? file_.PReadV(rest, r.offset + res)
                                          : file_.PWriteV(rest, r.offset + res);
    }
    return absl::OkStatus();
  }

  static const char* OpName(RequestType t) {
    switch (t) {
      case RequestType::kRead: return "read";
      case RequestType::kWrite: return "write";
      case RequestType::kFlush: return "fsync";
      case RequestType::kDiscard: return "discard";
      case RequestType::kWriteZeroes: return "write-zeroes";
    }
    return "?";
  }

  void Reap() {
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      int r = io_uring_wait_cqe(&ring_, &cqe);
      if (r == -EINTR) continue;
      if (r < 0) return;  // the ring is broken; nothing more will complete
      Op* raw = static_cast<Op*>(io_uring_cqe_get_data(cqe));
      int res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      if (raw == nullptr) return;  // stop marker
      // The Op was filled in under mu_ by Submit; taking mu_ here orders
      // that before our reads in the C++ memory model (the ring alone does
      // not, as far as ThreadSanitizer can tell).
      { std::lock_guard<std::mutex> sync(mu_); }
      std::unique_ptr<Op> op(raw);
      absl::Status s = Finish(*op, res);
      op->done(std::move(s));
      std::lock_guard<std::mutex> lock(mu_);
      --inflight_;
      bool queued = false;
      while (inflight_ < depth_ && !pending_.empty()) {
        Prepare(std::move(pending_.front()));
        pending_.pop_front();
        queued = true;
      }
      if (queued) io_uring_submit(&ring_);
      if (inflight_ == 0 && pending_.empty()) idle_.notify_all();
    }
  }

  File file_;
  const uint64_t size_;
  io_uring ring_{};
  bool ring_ok_ = false;
  unsigned depth_ = 0;
  std::mutex mu_;
  std::condition_variable idle_;
  unsigned inflight_ = 0;
  std::deque<std::unique_ptr<Op>> pending_;
  std::thread reaper_;
};

}  // namespace

bool IoUringAvailable() {
  static const bool available = [] {
    io_uring ring;
    if (io_uring_queue_init(2, &ring, 0) < 0) return false;
    io_uring_queue_exit(&ring);
    return true;
  }();
  return available;
}

absl::StatusOr<std::unique_ptr<BlockBackend>> CreateUringBackend(
    const std::string& path, const BackendOptions& options) {
  if (!IoUringAvailable()) {
    return absl::FailedPreconditionError("io_uring is not available here");
  }
  return UringBackend::Create(path, options);
}

}  // namespace block
