// virtio-gpu's snapshot state (virtio::GpuState) <-> kindling.migration.v1
// VirtioGpu. Pixels travel zstd-compressed (a framebuffer is mostly runs);
// decoding bounds every resource's size before it allocates and all of
// them together by `max_pixel_bytes` (the device's host-memory limit),
// and names what was wrong. The device checks the rest when it loads the
// state (ids, formats, backing in guest RAM; virtio::Gpu2d::RestoreState).
//
//   ASSIGN_OR_RETURN(v1::VirtioGpu msg, EncodeGpu(gpu.SaveState()));
//   ASSIGN_OR_RETURN(virtio::GpuState s, DecodeGpu(msg, gpu.limits().max_host_bytes));
//   RETURN_IF_ERROR(gpu.RestoreState(std::move(s)));
#ifndef MIGRATION_GPU_CODEC_H_
#define MIGRATION_GPU_CODEC_H_

#include "absl/status/statusor.h"
#include "migration/snapshot.pb.h"
#include "virtio/gpu_2d.h"

namespace migration {

namespace v1 = ::kindling::migration::v1;

absl::StatusOr<v1::VirtioGpu> EncodeGpu(const virtio::GpuState& state);
absl::StatusOr<virtio::GpuState> DecodeGpu(const v1::VirtioGpu& msg, uint64_t max_pixel_bytes);

}  // namespace migration

#endif  // MIGRATION_GPU_CODEC_H_
