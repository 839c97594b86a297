// Fuzzes virtio-gpu in virgl mode with virglrenderer stubbed
// (virgl_stub.cc): the device's router (one id space and one memory limit
// for 2D and 3D resources, the 3D scanout) and VirglRenderer's checks in
// front of every virgl call. The input is a run of requests, each a
// little-endian u16 length and that many bytes, executed in order; the
// input is also copied to guest address 0 so backing entries find bytes.
// Then the scanout is read. Nothing may crash, hang, hand virglrenderer an
// id it does not know (the stub aborts), or pass the memory limit.
#include <cstdlib>
#include <cstring>

#include "libs/virtio/fuzz/gpu_fuzz_env.h"
#include "virtio/gpu.h"
#include "virtio/gpu_virgl.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<vm_memory::GuestMemory> mem = virtio::fuzz::RamHoldingInput(data, size);
  if (!mem) return 0;
  constexpr uint64_t kLimit = 4 << 20;
  auto renderer = virtio::VirglRenderer::Create(*mem, kLimit);
  if (!renderer.ok()) std::abort();
  virtio::VirglRenderer* r = renderer->get();
  virtio::Gpu gpu(virtio::GpuLimits{.width = 640, .height = 480, .max_host_bytes = kLimit}, *mem,
                  std::move(*renderer));
  virtio::fuzz::ForEachRequest(data, size, [&](std::span<const uint8_t> req) {
    std::vector<uint8_t> resp = gpu.Execute(req);
    if (resp.size() < 24) std::abort();  // every response has a header
    if (r->host_bytes() > kLimit) std::abort();
  });
  (void)gpu.Activate({mem.get(), {}, nullptr, 0, nullptr});
  (void)gpu.Screenshot(0);
  return 0;
}
