#include "virtio/event_loop.h"

#include <pthread.h>
#include <unistd.h>

#include <cstdint>
#include <future>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include <boost/asio/post.hpp>

namespace virtio {

struct EventLoop::Watch {
  Watch(boost::asio::io_context& io, int fd, std::function<void()> fn)
      : sd(io, ::dup(fd)), callback(std::move(fn)) {
    sd.non_blocking(true);
  }
  boost::asio::posix::stream_descriptor sd;
  std::function<void()> callback;
};

EventLoop::EventLoop(std::string name)
    : name_(std::move(name)), guard_(boost::asio::make_work_guard(io_)) {
  thread_ = std::thread([this] {
    std::string short_name = name_.substr(0, 15);  // the kernel's limit
    pthread_setname_np(pthread_self(), short_name.c_str());
    io_.run();
  });
}

EventLoop::~EventLoop() { Stop(); }

void EventLoop::Stop() {
  guard_.reset();
  io_.stop();
  if (thread_.joinable()) thread_.join();
}

void EventLoop::Post(std::function<void()> fn) { boost::asio::post(io_, std::move(fn)); }

bool EventLoop::InLoopThread() const { return std::this_thread::get_id() == thread_.get_id(); }

void EventLoop::RunSync(const std::function<void()>& fn) {
  if (InLoopThread()) {
    fn();
    return;
  }
  std::promise<void> done;
  boost::asio::post(io_, [&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

struct LoopHold::Shared {
  absl::Notification tried;
  absl::Notification release;
  bool held = false;
};

LoopHold::~LoopHold() { shared_->release.Notify(); }

absl::StatusOr<std::unique_ptr<LoopHold>> EventLoop::Hold(std::function<bool()> ready,
                                                          absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    auto shared = std::make_shared<LoopHold::Shared>();
    boost::asio::post(io_, [shared, ready] {
      if (shared->release.HasBeenNotified()) return;  // the caller gave up
      shared->held = ready();
      shared->tried.Notify();
      if (shared->held) shared->release.WaitForNotification();
    });
    if (!shared->tried.WaitForNotificationWithDeadline(deadline)) {
      shared->release.Notify();  // if it runs after all, it passes through
      return absl::DeadlineExceededError(
          absl::StrCat(name_, ": the devices did not come to rest in ", absl::FormatDuration(timeout)));
    }
    if (shared->held) return std::make_unique<LoopHold>(std::move(shared));
    absl::SleepFor(absl::Milliseconds(1));
  }
}

void EventLoop::WatchEventFd(int fd, std::function<void()> fn) {
  auto w = std::make_unique<Watch>(io_, fd, std::move(fn));
  Watch* raw = w.get();
  RunSync([&] {
    watches_.push_back(std::move(w));
    Arm(raw);
  });
}

void EventLoop::Arm(Watch* w) {
  w->sd.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                   [this, w](const boost::system::error_code& ec) {
                     if (ec) return;  // loop stopping
                     uint64_t count;
                     while (::read(w->sd.native_handle(), &count, sizeof(count)) < 0 &&
                            errno == EINTR) {
                     }
                     w->callback();
                     Arm(w);
                   });
}

FdWatch::FdWatch(EventLoop& loop, int fd, std::function<void()> fn)
    : sd_(loop.context(), ::dup(fd)), fn_(std::move(fn)) {
  sd_.non_blocking(true);
}

FdWatch::~FdWatch() {
  *alive_ = false;
  boost::system::error_code ec;
  sd_.cancel(ec);
}

void FdWatch::Arm() {
  if (armed_) return;
  armed_ = true;
  sd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                 [this, alive = alive_, gen = generation_](const boost::system::error_code& ec) {
                   if (!*alive || ec || gen != generation_ || !armed_) return;
                   armed_ = false;
                   fn_();
                 });
}

void FdWatch::Disarm() {
  if (!armed_) return;
  armed_ = false;
  ++generation_;
  boost::system::error_code ec;
  sd_.cancel(ec);
}

}  // namespace virtio
