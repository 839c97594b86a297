// EventLoop: one Boost.Asio io_context on its own thread, where device
// work runs (never on vCPU threads).
//
//   EventLoop loop("virtio-blk0");
//   loop.WatchEventFd(ioeventfd, [&] { transport.HandleNotify(0); });
//   loop.Post([&] { ... });
//   loop.RunSync([&] { device.Reset(); });   // blocks until it ran
//
// A device that reads from a host fd only when it has somewhere to put
// the data (a TAP, a socket) uses an FdWatch and re-arms it on demand.
#ifndef VIRTIO_EVENT_LOOP_H_
#define VIRTIO_EVENT_LOOP_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

namespace virtio {

// While one exists, its loop's thread runs nothing else (EventLoop::Hold).
class LoopHold {
 public:
  struct Shared;
  explicit LoopHold(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  ~LoopHold();  // lets the loop go on
  LoopHold(const LoopHold&) = delete;
  LoopHold& operator=(const LoopHold&) = delete;

 private:
  std::shared_ptr<Shared> shared_;
};

class EventLoop {
 public:
  explicit EventLoop(std::string name);
  ~EventLoop();  // stops the thread; pending work is dropped
  // Stops and joins the thread but keeps the io_context, so objects bound
  // to it (devices' sockets, FdWatch) can still be destroyed safely.
  void Stop();
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
  // For snapshots: runs `ready` on the loop thread, letting other work run
  // between tries, until it returns true; then keeps the thread blocked
  // inside that task until the returned hold is destroyed, so no device
  // on this loop touches guest memory or its own state meanwhile. Not from
  // the loop thread. DEADLINE_EXCEEDED after `timeout`.
  absl::StatusOr<std::unique_ptr<LoopHold>> Hold(std::function<bool()> ready,
                                                 absl::Duration timeout);
  boost::asio::io_context& context() { return io_; }
  // Whether the loop thread has been told to stop (e.g. during teardown).
  bool stopped() const { return io_.stopped(); }

 private:
  struct Watch;
  void Arm(Watch* w);

  std::string name_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::vector<std::unique_ptr<Watch>> watches_;
  std::thread thread_;
};

// FdWatch: a one-shot readability watch on a file descriptor the watch
// does not own, for devices that must stop reading while the guest has no
// buffers (the data then waits in the kernel, not in the VMM).
//
//   FdWatch watch(loop, tap_fd, [&] { ReceiveFrames(); });
//   watch.Arm();      // fn runs once, on the loop thread, when readable
//
// Arm, Disarm and the destructor run on the loop thread (a device calls
// them from Activate/ProcessQueue/Reset); after Disarm or destruction fn is
// never called, even if a wakeup was already queued.
class FdWatch {
 public:
  FdWatch(EventLoop& loop, int fd, std::function<void()> fn);
  ~FdWatch();
  FdWatch(const FdWatch&) = delete;
  FdWatch& operator=(const FdWatch&) = delete;

  // Waits for the next readability; no-op if already armed.
  void Arm();
  void Disarm();
  bool armed() const { return armed_; }

 private:
  boost::asio::posix::stream_descriptor sd_;  // over a dup of the fd
  std::function<void()> fn_;
  bool armed_ = false;
  uint64_t generation_ = 0;  // bumped by Disarm: stale wakeups are ignored
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace virtio

#endif  // VIRTIO_EVENT_LOOP_H_
