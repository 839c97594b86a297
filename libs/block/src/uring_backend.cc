// BlockBackend on io_uring for any Image (docs/design/block-uring-formats.md).
//
// A read or write whose range the image can map (Image::MapDirect) goes to
// the ring, one SQE per host extent; zero extents are filled here. The
// request completes when its last SQE does, and then releases the image's
// lease on the mapping. Everything else (unmappable requests, flush, discard,
// write-zeroes, errors) runs on a thread pool over the same image.
#include <errno.h>
#include <liburing.h>
#include <string.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <atomic>
#include <thread>

#include "absl/strings/str_format.h"
#include "block/backend.h"
#include "block/file.h"
#include "kindling/status_macros.h"
#include "libs/block/src/backend_internal.h"

namespace block {
namespace {

class UringBackend;
// The backend whose reaper runs on this thread: its completions' Submits
// only fill SQEs, and the reaper submits them in one go after the batch.
thread_local const UringBackend* t_reaping = nullptr;

struct Op;
// One SQE's share of a request: a host extent and the iovecs landing there.
struct Part {
  Op* op = nullptr;
  HostExtent extent;
  std::vector<iovec> iov;
};

struct Op {
  Request req;
  Completion done;
  DirectMapping map;
  std::vector<Part> parts;  // file extents only
  size_t remaining = 0;     // parts not yet completed
  absl::Status status;      // the first failure
};

class UringBackend : public BlockBackend {
 public:
  static absl::StatusOr<std::unique_ptr<BlockBackend>> Create(
      std::unique_ptr<Image> image, const BackendOptions& options) {
    const unsigned threads = options.threads ? options.threads : 1;
    auto b = std::unique_ptr<UringBackend>(new UringBackend(std::move(image), threads));
    const unsigned depth = options.queue_depth ? options.queue_depth : 128;
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
    pool_.join();
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

  uint64_t size() const override { return image_->size(); }
  Capabilities capabilities() const override { return image_->capabilities(); }
  std::string_view engine() const override { return "io_uring"; }
  BackendStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    BackendStats s = stats_;
    s.inline_requests = inline_.load(std::memory_order_relaxed);
    return s;
  }

  std::optional<absl::Status> TryWithoutBlocking(const Request& req) override {
    std::optional<absl::Status> s = TryImageWithoutBlocking(*image_, req, nowait_);
    if (s) inline_.fetch_add(1, std::memory_order_relaxed);
    return s;
  }

  void Submit(Request req, Completion done) override {
    if (req.type == RequestType::kRead || req.type == RequestType::kWrite) {
      req.length = IovLength(req.iov);
    }
    absl::Status early = ValidateRequest(*image_, req);
    if (!early.ok()) {
      boost::asio::post(pool_, [done = std::move(done), early] { done(early); });
      return;
    }
    std::unique_ptr<Op> op = Map(std::move(req), std::move(done));
    if (op == nullptr) return;  // went to the pool
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.direct_requests;
    if (inflight_ + op->parts.size() > depth_ || !pending_.empty()) {
      pending_.push_back(std::move(op));
      return;
    }
    Prepare(std::move(op));
    if (t_reaping == this) {
      unsubmitted_ = true;
    } else {
      io_uring_submit(&ring_);
    }
  }

 private:
  UringBackend(std::unique_ptr<Image> image, unsigned threads)
      : image_(std::move(image)), pool_(threads) {}

  // The request as ring parts, or nullptr after handing it to the pool.
  std::unique_ptr<Op> Map(Request req, Completion done) {
    const bool write = req.type == RequestType::kWrite;
    std::optional<DirectMapping> map;
    if ((req.type == RequestType::kRead || write) && req.length > 0) {
      map = image_->MapDirect(req.offset, req.length, write);
    }
    size_t files = 0;
    if (map) {
      for (const HostExtent& e : map->extents) files += e.file != nullptr;
    }
    if (!map || !Covers(*map, req.length, write) || files > depth_) {
      map.reset();
      Defer(std::move(req), std::move(done));
      return nullptr;
    }
    if (files == 0) {  // all zeros (a read: Covers refuses zeros to write): no I/O
      IovZero(req.iov);
      map->Release();
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.direct_requests;
      }
      boost::asio::post(pool_, [done = std::move(done)] { done(absl::OkStatus()); });
      return nullptr;
    }
    auto op = std::make_unique<Op>();
    op->req = std::move(req);
    op->done = std::move(done);
    op->parts.reserve(files);
    uint64_t pos = 0;
    for (const HostExtent& e : map->extents) {
      auto slice = IovSlice(op->req.iov, pos, e.length);
      if (e.file == nullptr) {
        IovZero(slice);
      } else {
        op->parts.push_back({op.get(), e, std::move(slice)});
      }
      pos += e.length;
    }
    op->map = std::move(*map);
    op->remaining = op->parts.size();
    return op;
  }

  // True when the extents add up to the request (and a write maps no zeros).
  static bool Covers(const DirectMapping& map, uint64_t length, bool write) {
    uint64_t total = 0;
    for (const HostExtent& e : map.extents) {
      if (write && e.file == nullptr) return false;
      total += e.length;
    }
    return total == length;
  }

  void Defer(Request req, Completion done) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.pool_requests;
    }
    boost::asio::post(pool_, [this, req = std::move(req), done = std::move(done)] {
      done(ExecuteOnImage(*image_, req));
    });
  }

  // Requires mu_. Fills one SQE per part (the caller submits).
  void Prepare(std::unique_ptr<Op> op) {
    const bool write = op->req.type == RequestType::kWrite;
    for (Part& p : op->parts) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) {  // cannot happen: inflight_ + parts <= depth_
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
      }
      const int fd = p.extent.file->FdFor(p.iov, p.extent.offset);
      if (write) {
        io_uring_prep_writev(sqe, fd, p.iov.data(), p.iov.size(), p.extent.offset);
      } else {
        io_uring_prep_readv(sqe, fd, p.iov.data(), p.iov.size(), p.extent.offset);
      }
      io_uring_sqe_set_data(sqe, &p);
      ++inflight_;
    }
    op.release();  // owned by its parts until the last completes
  }

  // The status of one part, finishing a short transfer synchronously.
  absl::Status FinishPart(const Part& p, int res) {
    const bool write = p.op->req.type == RequestType::kWrite;
    const File& f = *p.extent.file;
    if (res < 0) {
      return absl::Status(absl::ErrnoToStatusCode(-res),
                          absl::StrFormat("io_uring %s(%s, offset 0x%x, length %u): %s",
                                          write ? "write" : "read", f.name(),
                                          p.extent.offset, p.extent.length, strerror(-res)));
    }
    if (static_cast<uint64_t>(res) < p.extent.length) {  // rare: past EOF, signals
      auto rest = IovSlice(p.iov, res, p.extent.length - res);
      return write ? f.PWriteV(rest, p.extent.offset + res)
                   : f.PReadV(rest, p.extent.offset + res);
    }
    return absl::OkStatus();
  }

  // Completions in batches: every CQE ready is handled before the SQEs its
  // callbacks (and the queue) filled are submitted, with one syscall.
  void Reap() {
    t_reaping = this;
    std::vector<std::pair<Part*, int>> batch;
    for (bool stop = false; !stop;) {
      io_uring_cqe* cqe = nullptr;
      int r = io_uring_wait_cqe(&ring_, &cqe);
      if (r == -EINTR) continue;
      if (r < 0) return;  // the ring is broken; nothing more will complete
      batch.clear();
      unsigned head, seen = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        Part* part = static_cast<Part*>(io_uring_cqe_get_data(cqe));
        if (part == nullptr) {
          stop = true;  // the marker; nothing was submitted after it
        } else {
          batch.emplace_back(part, cqe->res);
        }
      }
      io_uring_cq_advance(&ring_, seen);
      {
        // Frees the SQ slots first, so the callbacks' Submits go straight
        // into the ring. Also orders Submit's writes to each Op before our
        // reads (the ring alone does not, as far as ThreadSanitizer can tell).
        std::lock_guard<std::mutex> lock(mu_);
        inflight_ -= batch.size();
      }
      for (auto& [part, res] : batch) Complete(*part, res);
      Refill();
    }
  }

  void Complete(Part& part, int res) {
    absl::Status s = FinishPart(part, res);
    Op* op = part.op;
    if (!s.ok() && op->status.ok()) op->status = std::move(s);
    if (--op->remaining > 0) return;
    std::unique_ptr<Op> owned(op);
    owned->map.Release();
    owned->done(std::move(owned->status));
  }

  // After a batch: submit what waited for room and what the callbacks filled.
  void Refill() {
    std::lock_guard<std::mutex> lock(mu_);
    while (!pending_.empty() && inflight_ + pending_.front()->parts.size() <= depth_) {
      Prepare(std::move(pending_.front()));
      pending_.pop_front();
      unsubmitted_ = true;
    }
    if (unsubmitted_) io_uring_submit(&ring_);
    unsubmitted_ = false;
    if (inflight_ == 0 && pending_.empty()) idle_.notify_all();
  }

  std::unique_ptr<Image> image_;
  boost::asio::thread_pool pool_;
  io_uring ring_{};
  bool ring_ok_ = false;
  unsigned depth_ = 0;
  mutable std::mutex mu_;
  std::condition_variable idle_;
  size_t inflight_ = 0;  // SQEs
  std::deque<std::unique_ptr<Op>> pending_;
  bool unsubmitted_ = false;  // SQEs filled on the reaper thread, not yet submitted
  BackendStats stats_;
  std::atomic<uint64_t> inline_{0};
  NoWaitSupport nowait_;
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
    std::unique_ptr<Image> image, const BackendOptions& options) {
  if (!IoUringAvailable()) {
    return absl::FailedPreconditionError("io_uring is not available here");
  }
  return UringBackend::Create(std::move(image), options);
}

}  // namespace block
