// Fuzzes the device side of a virtqueue, split or packed (input byte 1,
// bit 2): the input is the guest's memory (descriptor table or ring,
// available ring or driver area, indirect tables, buffers).
// Every chain the queue accepts must lie in RAM and be walkable by the
// chain reader and writer; everything else must be a clean error.
#include <cstdlib>
#include <vector>

#include "libs/virtio/fuzz/fuzz_env.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  virtio::Queue q(256);
  auto mem = virtio::fuzz::MakeGuest(data, size, q);
  if (!mem) return 0;
  std::vector<uint8_t> buf(4096);
  for (int i = 0; i < 300; ++i) {
    auto chain = q.Pop();
    if (!chain.ok() || !chain->has_value()) break;
    const virtio::DescriptorChain& c = **chain;
    for (const virtio::Buffer& b : c.buffers) {
      if (b.len > 0 && !mem->CheckRange(b.addr, b.len)) std::abort();
    }
    virtio::ChainReader r(*mem, c);
    size_t n = std::min<uint64_t>(r.remaining(), buf.size());
    if (!r.Read({buf.data(), n}).ok()) std::abort();
    virtio::ChainWriter w(*mem, c);
    n = std::min<uint64_t>(w.remaining(), buf.size());
    if (!w.Write({buf.data(), n}).ok()) std::abort();
    if (!q.PushUsed(c.head, static_cast<uint32_t>(n)).ok()) std::abort();
    (void)q.NeedsInterrupt();
  }
  return 0;
}
