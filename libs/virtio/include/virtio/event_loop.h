// EventLoop: one Boost.Asio io_context on its own thread, where device
// work runs (never on vCPU threads).
//
//   EventLoop loop("virtio-blk0");
//   loop.WatchEventFd(ioeventfd, [&] { transport.HandleNotify(0); });
//   loop.Post([&] { ... });
//   loop.RunSync([&] { device.Reset(); });   // blocks until it ran
#ifndef VIRTIO_EVENT_LOOP_H_
#define VIRTIO_EVENT_LOOP_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

namespace virtio {

class EventLoop {
 public:
  explicit EventLoop(std::string name);
  ~EventLoop();  // stops the thread; pending work is dropped
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  void Post(std::function<void()> fn);
  // Runs fn on the loop thread and waits for it (runs inline when called
  // from the loop thread itself).
  void RunSync(const std::function<void()>& fn);
  // Calls fn on the loop thread each time the eventfd becomes readable,
  // after draining its counter. The loop does not own the fd.
  void WatchEventFd(int fd, std::function<void()> fn);
  bool InLoopThread() const;
  boost::asio::io_context& context() { return io_; }

 private:
  struct Watch;
  void Arm(Watch* w);

  std::string name_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::vector<std::unique_ptr<Watch>> watches_;
  std::thread thread_;
};

}  // namespace virtio

#endif  // VIRTIO_EVENT_LOOP_H_
