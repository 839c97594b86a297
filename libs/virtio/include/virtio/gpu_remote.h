// RemoteRenderer: a Renderer3d in a process of its own, so that the VM
// process links no GL (kindling is a static binary) and a GPU driver that
// crashes takes down only the renderer, not the guest.
//
//   VM process                              renderer process (kindling-gpu)
//   RemoteRenderer::Spawn(binary, ...)  --> ServeRenderer(3, make_virgl)
//     hello: RAM layout + memfds (SCM_RIGHTS), max_host_bytes
//                                       <-- hello: capset count, renderer name
//     Execute(request)                  --> Renderer3d::Execute
//                                       <-- the response (after its fence)
//
// The two ends speak over a stream socket: frames of {op, length} and a
// payload. The renderer maps guest RAM from the memfds (GuestMemory::Adopt),
// so backing pages never cross the socket. The VM side bounds every reply
// (length, and a 30 s deadline: a renderer that hangs does not hang the
// VM); after a failure it answers ERR_UNSPEC to every further command and
// says why in its log. Guest RAM mapped privately from a snapshot's memory
// file cannot be shared and is refused.
#ifndef VIRTIO_GPU_REMOTE_H_
#define VIRTIO_GPU_REMOTE_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "virtio/gpu_3d.h"
#include "vm-memory/guest_memory.h"
#include "vm-memory/unique_fd.h"

namespace virtio {

class RemoteRenderer : public Renderer3d {
 public:
  static constexpr std::chrono::milliseconds kReplyTimeout{30000};

  // Starts `binary --fd 3` with one end of a socket pair as fd 3 and
  // greets it; the process ends when this object goes.
  static absl::StatusOr<std::unique_ptr<RemoteRenderer>> Spawn(const std::string& binary,
                                                               vm_memory::GuestMemory& memory,
                                                               uint64_t max_host_bytes);
  // Greets a renderer already listening on `socket` (tests, embedders that
  // start it their own way).
  static absl::StatusOr<std::unique_ptr<RemoteRenderer>> Connect(vm_memory::UniqueFd socket,
                                                                 vm_memory::GuestMemory& memory,
                                                                 uint64_t max_host_bytes);
  ~RemoteRenderer() override;

  std::vector<uint8_t> Execute(std::span<const uint8_t> request) override;
  absl::StatusOr<Pixels3d> ReadPixels(uint32_t resource_id, uint32_t x, uint32_t y,
                                      uint32_t width, uint32_t height) override;
  void Reset() override;
  const Renderer3dInfo& info() const override { return info_; }
  // Why the renderer stopped answering; OK while it works.
  absl::Status health() const;

 private:
  explicit RemoteRenderer(vm_memory::UniqueFd socket) : sock_(std::move(socket)) {}
  absl::Status Hello(vm_memory::GuestMemory& memory, uint64_t max_host_bytes);
  // Sends one frame and reads the reply, whose op must be `op` (or an
  // error frame, returned as its status) and whose length at most `max`.
  absl::StatusOr<std::vector<uint8_t>> Call(uint32_t op, std::span<const uint8_t> payload,
                                            uint64_t max) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  vm_memory::UniqueFd sock_ ABSL_GUARDED_BY(mu_);
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
  pid_t child_ = -1;
  Renderer3dInfo info_;
};

// The renderer process's side: reads the hello, maps guest RAM, makes the
// renderer with `make` and serves frames until the VM process closes the
// socket (OK) or sends something malformed (an error naming it).
using RendererFactory = std::function<absl::StatusOr<std::unique_ptr<Renderer3d>>(
    vm_memory::GuestMemory& memory, uint64_t max_host_bytes)>;
absl::Status ServeRenderer(int fd, const RendererFactory& make);

}  // namespace virtio

#endif  // VIRTIO_GPU_REMOTE_H_
