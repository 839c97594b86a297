#include "virtio/gpu_remote.h"

#include <fcntl.h>
#include <linux/virtio_gpu.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gpu_wire.h"

extern char** environ;

namespace virtio {
namespace {

using gpu_wire::Bytes;
using vm_memory::UniqueFd;

// Frame ops. A reply carries the request's op, or kError with
// {uint32 absl::StatusCode} and a message.
enum Op : uint32_t { kHello = 1, kExecute = 2, kReadPixels = 3, kReset = 4, kError = 5 };

constexpr uint32_t kMagic = 0x5550474b;  // "KGPU"
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxRegions = 16;
constexpr uint64_t kMaxRequest = 1 << 20;  // a frame to the renderer
constexpr uint64_t kMaxResponse = 1 << 20;
constexpr uint64_t kMaxName = 256;
constexpr uint64_t kMaxErrorFrame = 4096;  // a status code and its message

struct FrameHeader {
  uint32_t op;
  uint32_t len;
};
struct HelloRequest {
  uint32_t magic, version;
  uint64_t max_host_bytes;
  uint32_t regions, pad;
};
struct HelloRegion {
  uint64_t start, size;
};
struct PixelsRequest {
  uint32_t resource_id, x, y, width, height;
};

// Waits until `fd` is ready for `events`; a negative timeout waits forever.
absl::Status WaitReady(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    int n = ::poll(&p, 1, timeout_ms);
    if (n > 0) return absl::OkStatus();
    if (n == 0) return absl::DeadlineExceededError("the GPU renderer did not answer in time");
    if (errno != EINTR) return absl::ErrnoToStatus(errno, "poll on the GPU renderer socket");
  }
}

absl::Status SendAll(int fd, std::span<const uint8_t> data, int timeout_ms,
                     std::span<const int> fds = {}) {
  while (!data.empty()) {
    iovec iov{const_cast<uint8_t*>(data.data()), data.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxRegions)];
    if (!fds.empty()) {  // with the first byte only
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (absl::Status s = WaitReady(fd, POLLOUT, timeout_ms); !s.ok()) return s;
      continue;
    }
    if (n < 0) return absl::ErrnoToStatus(errno, "writing to the GPU renderer socket");
    data = data.subspan(static_cast<size_t>(n));
    fds = {};
  }
  return absl::OkStatus();
}

// Reads exactly out.size() bytes; fds passed with them land in `fds`.
absl::Status RecvAll(int fd, std::span<uint8_t> out, int timeout_ms,
                     std::vector<UniqueFd>* fds = nullptr) {
  while (!out.empty()) {
    iovec iov{out.data(), out.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxRegions)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    // Try first, wait only when nothing is there: one syscall, not two,
    // for a reply that is already in (the common case).
    ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (absl::Status s = WaitReady(fd, POLLIN, timeout_ms); !s.ok()) return s;
      continue;
    }
    if (n < 0) return absl::ErrnoToStatus(errno, "reading the GPU renderer socket");
    if (n == 0) return absl::UnavailableError("the GPU renderer socket closed");
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int got;
        std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (fds) {
          fds->emplace_back(got);
        } else {
          ::close(got);  // nobody asked for descriptors here
        }
      }
    }
    out = out.subspan(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status SendFrame(int fd, uint32_t op, std::span<const uint8_t> payload, int timeout_ms,
                       std::span<const int> fds = {}) {
  if (payload.size() > UINT32_MAX) return absl::InvalidArgumentError("a GPU frame over 4 GiB");
  FrameHeader h{op, static_cast<uint32_t>(payload.size())};
  std::vector<uint8_t> frame(Bytes(h).begin(), Bytes(h).end());
  frame.insert(frame.end(), payload.begin(), payload.end());
  return SendAll(fd, frame, timeout_ms, fds);
}

struct Frame {
  uint32_t op = 0;
  std::vector<uint8_t> payload;
};

absl::StatusOr<Frame> RecvFrame(int fd, uint64_t max, int timeout_ms,
                                std::vector<UniqueFd>* fds = nullptr) {
  FrameHeader h;
  std::span<uint8_t> hb(reinterpret_cast<uint8_t*>(&h), sizeof(h));
  if (absl::Status s = RecvAll(fd, hb, timeout_ms, fds); !s.ok()) return s;
  if (h.len > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPU renderer frame of ", h.len, " bytes (op ", h.op, "): at most ", max));
  }
  Frame f{h.op, std::vector<uint8_t>(h.len)};
  if (absl::Status s = RecvAll(fd, f.payload, timeout_ms); !s.ok()) return s;
  return f;
}

absl::Status SendError(int fd, const absl::Status& status) {
  std::vector<uint8_t> p(4);
  uint32_t code = static_cast<uint32_t>(status.code());
  std::memcpy(p.data(), &code, 4);
  p.insert(p.end(), status.message().begin(), status.message().end());
  return SendFrame(fd, kError, p, -1);
}

absl::Status ErrorFrom(const Frame& f) {
  uint32_t code = static_cast<uint32_t>(absl::StatusCode::kUnknown);
  if (f.payload.size() >= 4) std::memcpy(&code, f.payload.data(), 4);
  std::string text(f.payload.begin() + std::min<size_t>(4, f.payload.size()), f.payload.end());
  if (code == 0 || code > static_cast<uint32_t>(absl::StatusCode::kUnauthenticated)) {
    code = static_cast<uint32_t>(absl::StatusCode::kUnknown);
  }
  return absl::Status(static_cast<absl::StatusCode>(code), absl::StrCat("GPU renderer: ", text));
}

}  // namespace

// ---- VM process side ----

absl::StatusOr<std::unique_ptr<RemoteRenderer>> RemoteRenderer::Spawn(
    const std::string& binary, vm_memory::GuestMemory& memory, uint64_t max_host_bytes) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair for the GPU renderer");
  }
  UniqueFd ours(sv[0]);
  // The child's end goes to fd 3; dup2 onto itself would keep CLOEXEC.
  UniqueFd theirs(sv[1] == 3 ? ::fcntl(sv[1], F_DUPFD_CLOEXEC, 4) : sv[1]);
  if (sv[1] == 3) ::close(3);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);
  std::string fd_arg = "3";
  char* argv[] = {const_cast<char*>(binary.c_str()), const_cast<char*>("--fd"), fd_arg.data(),
                  nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::ErrnoToStatus(rc, absl::StrCat("starting the GPU renderer ", binary));
  }
  theirs.reset();
  std::unique_ptr<RemoteRenderer> r(new RemoteRenderer(std::move(ours)));
  r->child_ = pid;
  if (absl::Status s = r->Hello(memory, max_host_bytes); !s.ok()) return s;
  return r;
}

absl::StatusOr<std::unique_ptr<RemoteRenderer>> RemoteRenderer::Connect(
    UniqueFd socket, vm_memory::GuestMemory& memory, uint64_t max_host_bytes) {
  std::unique_ptr<RemoteRenderer> r(new RemoteRenderer(std::move(socket)));
  if (absl::Status s = r->Hello(memory, max_host_bytes); !s.ok()) return s;
  return r;
}

absl::Status RemoteRenderer::Hello(vm_memory::GuestMemory& memory, uint64_t max_host_bytes) {
  std::vector<const vm_memory::GuestRegion*> regions = memory.regions();
  if (regions.size() > kMaxRegions) {
    return absl::InvalidArgumentError(
        absl::StrCat("the GPU renderer takes at most ", kMaxRegions, " RAM regions"));
  }
  HelloRequest h{kMagic, kVersion, max_host_bytes, static_cast<uint32_t>(regions.size()), 0};
  std::vector<uint8_t> p(Bytes(h).begin(), Bytes(h).end());
  std::vector<int> fds;
  for (const vm_memory::GuestRegion* r : regions) {
    if (r->private_file()) {
      return absl::FailedPreconditionError(
          "virgl needs guest RAM it can share with its renderer; this VM maps a memory file "
          "privately (restored from a snapshot)");
    }
    HelloRegion hr{r->start().value, r->size()};
    p.insert(p.end(), Bytes(hr).begin(), Bytes(hr).end());
    fds.push_back(r->fd());
  }
  absl::MutexLock lock(&mu_);
  const int ms = static_cast<int>(kReplyTimeout.count());
  if (absl::Status s = SendFrame(sock_.get(), kHello, p, ms, fds); !s.ok()) return s;
  auto reply = RecvFrame(sock_.get(), 4 + kMaxName, ms);
  if (!reply.ok()) return reply.status();
  if (reply->op == kError) return ErrorFrom(*reply);
  if (reply->op != kHello || reply->payload.size() < 4) {
    return absl::DataLossError(absl::StrCat("GPU renderer: a malformed hello (op ", reply->op,
                                            ", ", reply->payload.size(), " bytes)"));
  }
  std::memcpy(&info_.num_capsets, reply->payload.data(), 4);
  info_.name.assign(reply->payload.begin() + 4, reply->payload.end());
  return absl::OkStatus();
}

RemoteRenderer::~RemoteRenderer() {
  {
    absl::MutexLock lock(&mu_);
    sock_.reset();  // the renderer reads EOF and exits
  }
  if (child_ <= 0) return;
  for (int i = 0; i < 200; ++i) {  // 2 s, then it is killed
    if (::waitpid(child_, nullptr, WNOHANG) == child_) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(child_, SIGKILL);
  ::waitpid(child_, nullptr, 0);
}

absl::StatusOr<std::vector<uint8_t>> RemoteRenderer::Call(uint32_t op,
                                                          std::span<const uint8_t> payload,
                                                          uint64_t max) {
  if (!broken_.ok()) return broken_;
  const int ms = static_cast<int>(kReplyTimeout.count());
  absl::Status s = SendFrame(sock_.get(), op, payload, ms);
  absl::StatusOr<Frame> reply =
      s.ok() ? RecvFrame(sock_.get(), std::max(max, kMaxErrorFrame), ms) : s;
  if (reply.ok() && reply->op == kError) return ErrorFrom(*reply);  // it still serves
  if (reply.ok() && reply->op != op) {
    reply = absl::DataLossError(absl::StrCat("GPU renderer answered op ", reply->op, " to ", op));
  }
  if (!reply.ok()) {
    broken_ = reply.status();  // out of step or gone: no further calls
    return broken_;
  }
  return std::move(reply->payload);
}

std::vector<uint8_t> RemoteRenderer::Execute(std::span<const uint8_t> request) {
  virtio_gpu_ctrl_hdr in{};
  gpu_wire::Load(request, in);
  absl::MutexLock lock(&mu_);
  auto resp = Call(kExecute, request, kMaxResponse);
  if (!resp.ok() || resp->size() < sizeof(virtio_gpu_ctrl_hdr)) {
    return gpu_wire::Respond(in, VIRTIO_GPU_RESP_ERR_UNSPEC, {});
  }
  return std::move(*resp);
}

absl::StatusOr<Pixels3d> RemoteRenderer::ReadPixels(uint32_t resource_id, uint32_t x, uint32_t y,
                                                    uint32_t width, uint32_t height) {
  const uint64_t bytes = uint64_t{width} * height * 4;
  PixelsRequest req{resource_id, x, y, width, height};
  absl::MutexLock lock(&mu_);
  auto reply = Call(kReadPixels, Bytes(req), 4 + bytes);
  if (!reply.ok()) return reply.status();
  if (reply->size() != 4 + bytes) {
    return absl::DataLossError(absl::StrCat("GPU renderer: ", reply->size(), " bytes of pixels for a ",
                                            width, "x", height, " rectangle"));
  }
  Pixels3d out;
  std::memcpy(&out.format, reply->data(), 4);
  out.data.assign(reply->begin() + 4, reply->end());
  return out;
}

void RemoteRenderer::Reset() {
  absl::MutexLock lock(&mu_);
  (void)Call(kReset, {}, 0);
}

absl::Status RemoteRenderer::health() const {
  absl::MutexLock lock(&mu_);
  return broken_;
}

// ---- renderer process side ----

namespace {

absl::StatusOr<std::unique_ptr<vm_memory::GuestMemory>> AdoptRam(const Frame& hello,
                                                                  std::vector<UniqueFd> fds,
                                                                  uint64_t* max_host_bytes) {
  HelloRequest h;
  if (!gpu_wire::Load(hello.payload, h) || hello.op != kHello || h.magic != kMagic ||
      h.version != kVersion) {
    return absl::InvalidArgumentError("the first frame is not a kindling GPU hello (version 1)");
  }
  if (h.regions == 0 || h.regions > kMaxRegions || h.regions != fds.size() ||
      hello.payload.size() != sizeof(h) + h.regions * sizeof(HelloRegion)) {
    return absl::InvalidArgumentError(absl::StrCat("hello: ", h.regions, " regions, ", fds.size(),
                                                   " fds, ", hello.payload.size(), " bytes"));
  }
  std::vector<vm_memory::RegionSpec> layout;
  for (uint32_t i = 0; i < h.regions; ++i) {
    HelloRegion r;
    std::memcpy(&r, hello.payload.data() + sizeof(h) + i * sizeof(r), sizeof(r));
    layout.push_back({vm_memory::GuestAddress(r.start), r.size});
  }
  *max_host_bytes = h.max_host_bytes;
  return vm_memory::GuestMemory::Adopt(layout, std::move(fds));
}

// Answers one request frame; an error ends the session.
absl::Status ServeFrame(int fd, const Frame& f, Renderer3d& renderer) {
  switch (f.op) {
    case kExecute: return SendFrame(fd, kExecute, renderer.Execute(f.payload), -1);
    case kReset:
      renderer.Reset();
      return SendFrame(fd, kReset, {}, -1);
    case kReadPixels: {
      PixelsRequest req;
      if (f.payload.size() != sizeof(req)) break;
      std::memcpy(&req, f.payload.data(), sizeof(req));
      auto px = renderer.ReadPixels(req.resource_id, req.x, req.y, req.width, req.height);
      if (!px.ok()) return SendError(fd, px.status());
      std::vector<uint8_t> out(4 + px->data.size());
      std::memcpy(out.data(), &px->format, 4);
      std::memcpy(out.data() + 4, px->data.data(), px->data.size());
      return SendFrame(fd, kReadPixels, out, -1);
    }
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("GPU renderer: a malformed frame (op ", f.op, ", ", f.payload.size(), " bytes)"));
}

}  // namespace

absl::Status ServeRenderer(int fd, const RendererFactory& make) {
  std::vector<UniqueFd> fds;
  auto hello = RecvFrame(fd, sizeof(HelloRequest) + kMaxRegions * sizeof(HelloRegion), -1, &fds);
  if (!hello.ok()) return hello.status();
  uint64_t max_host_bytes = 0;
  auto memory = AdoptRam(*hello, std::move(fds), &max_host_bytes);
  absl::StatusOr<std::unique_ptr<Renderer3d>> renderer =
      memory.ok() ? make(**memory, max_host_bytes) : memory.status();
  if (!renderer.ok()) {
    (void)SendError(fd, renderer.status());
    return renderer.status();
  }
  const Renderer3dInfo& info = (*renderer)->info();
  std::vector<uint8_t> reply(4);
  std::memcpy(reply.data(), &info.num_capsets, 4);
  reply.insert(reply.end(), info.name.begin(),
               info.name.begin() + std::min<size_t>(info.name.size(), kMaxName));
  if (absl::Status s = SendFrame(fd, kHello, reply, -1); !s.ok()) return s;
  for (;;) {
    auto f = RecvFrame(fd, kMaxRequest, -1);
    if (!f.ok() && absl::IsUnavailable(f.status())) return absl::OkStatus();  // VM closed it
    if (!f.ok()) return f.status();
    if (absl::Status s = ServeFrame(fd, *f, **renderer); !s.ok()) return s;
  }
}

}  // namespace virtio
