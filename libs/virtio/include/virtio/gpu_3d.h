// Renderer3d: where virtio-gpu sends the 3D half of its commands when it
// offers VIRTIO_GPU_F_VIRGL (virtio 1.2, 5.7): capsets, contexts, 3D
// resources, 3D transfers and command submission. 2D resources stay in
// Gpu2d; the device routes each command by its type and resource id.
//
//   auto renderer = RemoteRenderer::Spawn("kindling-gpu", memory, limits.max_host_bytes);
//   auto gpu = std::make_shared<Gpu>(limits, memory, std::move(*renderer));
//
// Implementations: VirglRenderer (gpu_virgl.h, virglrenderer in this
// process) and RemoteRenderer (gpu_remote.h, the same in a process of its
// own). The device depends only on this interface, so an embedder that
// wants 2D only links no GL at all.
#ifndef VIRTIO_GPU_3D_H_
#define VIRTIO_GPU_3D_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace virtio {

struct Renderer3dInfo {
  std::string name;          // e.g. "virglrenderer on llvmpipe (LLVM 15.0.6, 256 bits)"
  uint32_t num_capsets = 0;  // virtio_gpu_config.num_capsets
};

// Level 0 of a 2D resource's rectangle: 4 bytes a pixel in `format`
// (VIRTIO_GPU_FORMAT_*), rows top to bottom, width * 4 bytes each.
struct Pixels3d {
  uint32_t format = 0;
  std::vector<uint8_t> data;
};

class Renderer3d {
 public:
  virtual ~Renderer3d() = default;
  // One request (a header and its command; SUBMIT_3D's stream and
  // ATTACH_BACKING's entries after it) in, the whole response out. A
  // fenced request returns once the fence has signalled. Called from one
  // thread at a time.
  virtual std::vector<uint8_t> Execute(std::span<const uint8_t> request) = 0;
  // For screenshots of a 3D resource on the scanout: NOT_FOUND for an
  // unknown resource, INVALID_ARGUMENT for a rectangle outside it or a
  // format that is not 4 bytes of colour a pixel.
  virtual absl::StatusOr<Pixels3d> ReadPixels(uint32_t resource_id, uint32_t x, uint32_t y,
                                              uint32_t width, uint32_t height) = 0;
  // Every context and 3D resource gone (a device reset).
  virtual void Reset() = 0;
  virtual const Renderer3dInfo& info() const = 0;
};

// Whether a request of this type belongs to the 3D renderer whatever its
// resource id: capsets, contexts, RESOURCE_CREATE_3D, the 3D transfers and
// SUBMIT_3D.
bool Is3dCommand(uint32_t type);

// A bound on the host memory a 3D resource may take: its texels at up to
// 16 bytes each (R32G32B32A32), its samples, layers and a full mip chain
// (at most 4/3 of level 0). 0 for a size past the device's limits
// (Renderer3d implementations refuse it before asking the renderer).
uint64_t Resource3dBytes(uint32_t target, uint32_t width, uint32_t height, uint32_t depth,
                         uint32_t array_size, uint32_t last_level, uint32_t nr_samples);

}  // namespace virtio

#endif  // VIRTIO_GPU_3D_H_
