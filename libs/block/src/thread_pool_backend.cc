// BlockBackend over any Image: a queue and a pool of worker threads.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "block/backend.h"

namespace block {
namespace {

class ThreadPoolBackend : public BlockBackend {
 public:
  ThreadPoolBackend(std::unique_ptr<Image> image, unsigned threads)
      : image_(std::move(image)) {
    if (threads == 0) threads = 1;
    for (unsigned i = 0; i < threads; ++i) {
      workers_.emplace_back([this] { Work(); });
    }
  }

  ~ThreadPoolBackend() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  uint64_t size() const override { return image_->size(); }
  Capabilities capabilities() const override { return image_->capabilities(); }
  std::string_view engine() const override { return "threads"; }

  void Submit(Request req, Completion done) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.emplace_back(std::move(req), std::move(done));
    }
    cv_.notify_one();
  }

 private:
  absl::Status Execute(const Request& req) {
    switch (req.type) {
      case RequestType::kRead:
        return image_->ReadV(req.offset, req.iov);
      case RequestType::kWrite:
        return image_->WriteV(req.offset, req.iov);
      case RequestType::kFlush:
        return image_->Flush();
      case RequestType::kDiscard:
        return image_->Discard(req.offset, req.length);
      case RequestType::kWriteZeroes:
        return image_->WriteZeroes(req.offset, req.length);
    }
    return absl::InvalidArgumentError("unknown request type");
  }

  void Work() {
    for (;;) {
      std::pair<Request, Completion> item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and everything drained
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      absl::Status s = Execute(item.first);
      item.second(std::move(s));
    }
  }

  std::unique_ptr<Image> image_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Request, Completion>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace

std::unique_ptr<BlockBackend> CreateThreadPoolBackend(
    std::unique_ptr<Image> image, unsigned threads) {
  return std::make_unique<ThreadPoolBackend>(std::move(image), threads);
}

}  // namespace block
