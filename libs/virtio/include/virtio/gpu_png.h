// PNG files for virtio-gpu screenshots, through libpng's simplified API.
//
//   ASSIGN_OR_RETURN(GpuImage shot, gpu->Screenshot(0));
//   ASSIGN_OR_RETURN(std::string png, EncodePng(shot));
//
// DecodePng reads any PNG libpng reads back into RGB (tests compare
// pixels with it); the image's size is bounded before its pixels are.
#ifndef VIRTIO_GPU_PNG_H_
#define VIRTIO_GPU_PNG_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "virtio/gpu_2d.h"

namespace virtio {

absl::StatusOr<std::string> EncodePng(const GpuImage& image);

// At most max_pixels pixels (RESOURCE_EXHAUSTED past that).
absl::StatusOr<GpuImage> DecodePng(std::string_view png, uint64_t max_pixels = 1ull << 28);

}  // namespace virtio

#endif  // VIRTIO_GPU_PNG_H_
