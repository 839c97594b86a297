// Fuzzes virtio-gpu's 2D command engine (Gpu2d): the input is a run of
// requests, each a little-endian u16 length and that many bytes, executed
// in order against one device, with the input also copied to guest
// address 0 so backing entries find bytes to transfer. After them the
// scanout is read and encoded as PNG. Resource sizes, backing entries,
// rectangles and offsets are all the fuzzer's: nothing may crash, hang,
// read outside the guest, or grow past the device's host-memory limit.
#include <cstdlib>
#include <cstring>

#include "libs/virtio/fuzz/gpu_fuzz_env.h"
#include "virtio/gpu_2d.h"
#include "virtio/gpu_png.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<vm_memory::GuestMemory> mem = virtio::fuzz::RamHoldingInput(data, size);
  if (!mem) return 0;
  virtio::GpuLimits limits{.width = 640, .height = 480, .max_host_bytes = 4 << 20};
  virtio::Gpu2d gpu(*mem, limits);
  virtio::fuzz::ForEachRequest(data, size, [&](std::span<const uint8_t> req) {
    std::vector<uint8_t> resp = gpu.Execute(req);
    if (resp.size() < 24) std::abort();  // every response has a header
  });
  if (gpu.stats().host_bytes > limits.max_host_bytes) std::abort();
  auto shot = gpu.Screenshot(0);
  if (shot.ok() && !virtio::EncodePng(*shot).ok()) std::abort();
  return 0;
}
