// BlockBackend over any Image: every request on a pool of worker threads
// (Boost.Asio's thread_pool).
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <atomic>
#include <utility>

#include "block/backend.h"
#include "libs/block/src/backend_internal.h"

namespace block {
namespace {

class ThreadPoolBackend : public BlockBackend {
 public:
  ThreadPoolBackend(std::unique_ptr<Image> image, unsigned threads)
      : image_(std::move(image)), pool_(threads ? threads : 1) {}

  // Runs what was submitted, then stops the workers.
  ~ThreadPoolBackend() override { pool_.join(); }

  uint64_t size() const override { return image_->size(); }
  Capabilities capabilities() const override { return image_->capabilities(); }
  std::string_view engine() const override { return "threads"; }
  BackendStats stats() const override {
    return {.pool_requests = submitted_.load(), .inline_requests = inline_.load()};
  }

  std::optional<absl::Status> TryWithoutBlocking(const Request& req) override {
    std::optional<absl::Status> s = TryImageWithoutBlocking(*image_, req, nowait_);
    if (s) inline_.fetch_add(1, std::memory_order_relaxed);
    return s;
  }

  void Submit(Request req, Completion done) override {
    submitted_.fetch_add(1, std::memory_order_relaxed);
    boost::asio::post(pool_, [this, req = std::move(req), done = std::move(done)] {
      done(ExecuteOnImage(*image_, req));
    });
  }

 private:
  std::unique_ptr<Image> image_;
  boost::asio::thread_pool pool_;
  std::atomic<uint64_t> submitted_{0};
  std::atomic<uint64_t> inline_{0};
  NoWaitSupport nowait_;
};

}  // namespace

std::unique_ptr<BlockBackend> CreateThreadPoolBackend(
    std::unique_ptr<Image> image, unsigned threads) {
  return std::make_unique<ThreadPoolBackend>(std::move(image), threads);
}

}  // namespace block
