#include "virtio/gpu_3d.h"

#include <linux/virtio_gpu.h>

#include <algorithm>

namespace virtio {
namespace {

constexpr uint32_t kPipeBuffer = 0;
constexpr uint32_t kMaxTarget = 8;  // PIPE_TEXTURE_CUBE_ARRAY
constexpr uint32_t kMaxBufferBytes = 1u << 28;
constexpr uint32_t kMaxDimension = 16384;
constexpr uint32_t kMaxLayers = 2048;
constexpr uint32_t kMaxLevel = 14;  // 16384 halves to 1 in 14 steps
constexpr uint32_t kMaxSamples = 16;
constexpr uint64_t kMaxTexelBytes = 16;

}  // namespace

bool Is3dCommand(uint32_t type) {
  switch (type) {
    case VIRTIO_GPU_CMD_GET_CAPSET_INFO:
    case VIRTIO_GPU_CMD_GET_CAPSET:
    case VIRTIO_GPU_CMD_CTX_CREATE:
    case VIRTIO_GPU_CMD_CTX_DESTROY:
    case VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE:
    case VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE:
    case VIRTIO_GPU_CMD_RESOURCE_CREATE_3D:
    case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D:
    case VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D:
    case VIRTIO_GPU_CMD_SUBMIT_3D: return true;
    default: return false;
  }
}

uint64_t Resource3dBytes(uint32_t target, uint32_t width, uint32_t height, uint32_t depth,
                         uint32_t array_size, uint32_t last_level, uint32_t nr_samples) {
  if (target > kMaxTarget || width == 0 || height == 0) return 0;
  if (target == kPipeBuffer) {
    bool flat = height == 1 && depth <= 1 && array_size <= 1 && last_level == 0;
    return flat && width <= kMaxBufferBytes ? width : 0;
  }
  if (width > kMaxDimension || height > kMaxDimension || depth > kMaxLayers ||
      array_size > kMaxLayers || last_level > kMaxLevel || nr_samples > kMaxSamples) {
    return 0;
  }
  // At most 2^14 * 2^14 * 2^11 * 2^11 * 2^4 * 2^4 = 2^58: no overflow.
  uint64_t bytes = uint64_t{width} * height * std::max(depth, 1u) * std::max(array_size, 1u) *
                   std::max(nr_samples, 1u) * kMaxTexelBytes;
  return last_level == 0 ? bytes : bytes + bytes / 3 + 1;
}

}  // namespace virtio
