#include "virtio/event_loop.h"

#include <pthread.h>
#include <unistd.h>

#include <cstdint>
#include <future>

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
