// VirglRenderer: virtio-gpu's 3D commands executed by virglrenderer, which
// renders with EGL on a surfaceless platform: Mesa's llvmpipe where there
// is no GPU, the GPU's own EGL (NVIDIA's, say) where there is one.
//
//   ASSIGN_OR_RETURN(auto r, VirglRenderer::Create(memory, 256 << 20));
//   LOG(INFO) << r->info().name;          // "virglrenderer on llvmpipe (...)"
//   std::vector<uint8_t> resp = r->Execute(request_bytes);
//
// virglrenderer keeps global state, so a process holds one VirglRenderer
// at a time; kindling runs it in a process of its own (kindling-gpu, see
// gpu_remote.h) that maps the guest's RAM. Everything the guest sends is
// checked before virglrenderer sees it: context and resource ids, resource
// sizes one by one (Resource3dBytes) and in total (max_host_bytes), backing
// entries in guest RAM, transfer boxes inside their resource, command
// stream lengths. A bad command gets the spec's error response.
#ifndef VIRTIO_GPU_VIRGL_H_
#define VIRTIO_GPU_VIRGL_H_

#include <sys/uio.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/gpu_3d.h"
#include "vm-memory/guest_memory.h"

struct virtio_gpu_ctrl_hdr;

namespace virtio {

class VirglRenderer : public Renderer3d {
 public:
  static constexpr uint32_t kMaxContexts = 64;
  static constexpr uint32_t kMaxResources = 16384;
  static constexpr uint32_t kMaxBackingEntries = 16384;
  static constexpr uint32_t kMaxCapsetBytes = 64 << 10;

  // Starts virglrenderer (FAILED_PRECONDITION if this process already has
  // one; UNAVAILABLE, naming the cause, if EGL cannot be had). `memory` is
  // the guest's RAM and must outlive the renderer.
  static absl::StatusOr<std::unique_ptr<VirglRenderer>> Create(vm_memory::GuestMemory& memory,
                                                               uint64_t max_host_bytes);
  ~VirglRenderer() override;

  std::vector<uint8_t> Execute(std::span<const uint8_t> request) override;
  absl::StatusOr<Pixels3d> ReadPixels(uint32_t resource_id, uint32_t x, uint32_t y,
                                      uint32_t width, uint32_t height) override;
  void Reset() override;
  const Renderer3dInfo& info() const override { return info_; }
  uint64_t host_bytes() const { return host_bytes_; }

 private:
  struct Resource {
    uint32_t target = 0, format = 0, width = 0, height = 0, layers = 0, last_level = 0;
    uint64_t bytes = 0;
    bool has_backing = false;
    std::vector<iovec> iov;  // into guest RAM; virglrenderer holds these pointers
  };

  VirglRenderer(vm_memory::GuestMemory& memory, uint64_t max_host_bytes);
  uint32_t Dispatch(const virtio_gpu_ctrl_hdr& hdr, std::span<const uint8_t> req,
                    std::vector<uint8_t>& body);
  uint32_t CapsetInfo(std::span<const uint8_t> req, std::vector<uint8_t>& body) const;
  uint32_t Capset(std::span<const uint8_t> req, std::vector<uint8_t>& body) const;
  uint32_t CreateContext(uint32_t ctx, std::span<const uint8_t> req);
  uint32_t DestroyContext(uint32_t ctx);
  uint32_t AttachToContext(uint32_t type, uint32_t ctx, std::span<const uint8_t> req);
  uint32_t CreateResource(std::span<const uint8_t> req);
  uint32_t Unref(std::span<const uint8_t> req);
  uint32_t AttachBacking(std::span<const uint8_t> req);
  uint32_t DetachBacking(std::span<const uint8_t> req);
  uint32_t Transfer(uint32_t type, uint32_t ctx, std::span<const uint8_t> req);
  uint32_t Submit(uint32_t ctx, std::span<const uint8_t> req);
  // Creates a fence after the command and waits for virglrenderer to
  // signal it (kFenceTimeout at most).
  bool WaitFence(uint32_t ctx);
  void DropResource(uint32_t id);
  static void WriteFence(void* cookie, uint32_t fence);

  vm_memory::GuestMemory& memory_;
  const uint64_t max_host_bytes_;
  uint64_t host_bytes_ = 0;
  std::map<uint32_t, Resource> resources_;
  // Each context and the resources attached to it (a transfer in a
  // context needs its resource attached there, or virglrenderer puts the
  // context in error).
  std::map<uint32_t, std::set<uint32_t>> contexts_;
  uint32_t fences_created_ = 0;
  uint32_t fences_done_ = 0;
  Renderer3dInfo info_;
};

}  // namespace virtio

#endif  // VIRTIO_GPU_VIRGL_H_
