// Fuzzes virtio-gpu's 2D command engine (Gpu2d): the input is a run of
// requests, each a little-endian u16 length and that many bytes, executed
// in order against one device, with the input also copied to guest
// address 0 so backing entries find bytes to transfer. After them the
// scanout is read and encoded as PNG. Resource sizes, backing entries,
// rectangles and offsets are all the fuzzer's: nothing may crash, hang,
// read outside the guest, or grow past the device's host-memory limit.
#include <cstdlib>
#include <cstring>

#include "virtio/gpu_2d.h"
#include "virtio/gpu_png.h"
#include "vm-memory/guest_memory.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr uint64_t kRam = 1 << 20;
  vm_memory::RegionSpec spec{vm_memory::GuestAddress(0), kRam};
  auto mem = vm_memory::GuestMemory::Create({&spec, 1});
  if (!mem.ok()) return 0;
  if (!(*mem)->Write(vm_memory::GuestAddress(0), {data, std::min<size_t>(size, kRam)}).ok()) {
    return 0;
  }
  virtio::GpuLimits limits{.width = 640, .height = 480, .max_host_bytes = 4 << 20};
  virtio::Gpu2d gpu(**mem, limits);
  size_t at = 0;
  while (at + 2 <= size) {
    size_t len = data[at] | (data[at + 1] << 8);
    at += 2;
    len = std::min(len, size - at);
    std::vector<uint8_t> resp = gpu.Execute({data + at, len});
    if (resp.size() < 24) std::abort();  // every response has a header
    at += len;
  }
  if (gpu.stats().host_bytes > limits.max_host_bytes) std::abort();
  auto shot = gpu.Screenshot(0);
  if (shot.ok() && !virtio::EncodePng(*shot).ok()) std::abort();
  return 0;
}
