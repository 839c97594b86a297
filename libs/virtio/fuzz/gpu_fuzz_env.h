// Shared by the virtio-gpu fuzz targets: a 1 MiB guest holding the input
// (so backing entries find bytes), and the input read as a run of
// requests, each a little-endian u16 length and that many bytes.
#ifndef VIRTIO_GPU_FUZZ_ENV_H_
#define VIRTIO_GPU_FUZZ_ENV_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>

#include "vm-memory/guest_memory.h"

namespace virtio::fuzz {

inline constexpr uint64_t kGpuRam = 1 << 20;

// Guest RAM at 0 with the input copied to its start; null if that fails.
inline std::unique_ptr<vm_memory::GuestMemory> RamHoldingInput(const uint8_t* data, size_t size) {
  vm_memory::RegionSpec spec{vm_memory::GuestAddress(0), kGpuRam};
  auto mem = vm_memory::GuestMemory::Create({&spec, 1});
  if (!mem.ok()) return nullptr;
  if (!(*mem)->Write(vm_memory::GuestAddress(0), {data, std::min<size_t>(size, kGpuRam)}).ok()) {
    return nullptr;
  }
  return std::move(*mem);
}

// Calls run(request) for each length-prefixed request in the input, in
// order; a length past the end takes what is left.
template <typename Fn>
void ForEachRequest(const uint8_t* data, size_t size, Fn&& run) {
  size_t at = 0;
  while (at + 2 <= size) {
    size_t len = data[at] | (data[at + 1] << 8);
    at += 2;
    len = std::min(len, size - at);
    run(std::span<const uint8_t>(data + at, len));
    at += len;
  }
}

}  // namespace virtio::fuzz

#endif  // VIRTIO_GPU_FUZZ_ENV_H_
