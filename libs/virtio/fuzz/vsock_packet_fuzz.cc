// Fuzzes virtio-vsock packet parsing: guest memory from the input (see
// fuzz_env.h) with the tx and rx queues on the same rings, so the packets
// the guest "sends" are also the buffers replies land in. Packets may be
// answered with RST or break the device; nothing may crash or hang, and
// connections stay bounded.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "libs/virtio/fuzz/fuzz_env.h"
#include "virtio/vsock.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static virtio::EventLoop loop("vsock-fuzz");
  static const std::string path = "/tmp/kindling-vsock-fuzz-" + std::to_string(getpid());
  virtio::Queue queues[3] = {virtio::Queue(256), virtio::Queue(256), virtio::Queue(256)};
  auto mem = virtio::fuzz::MakeGuest(data, size, queues[1]);
  if (!mem) return 0;
  queues[0].set_size(queues[1].size());
  queues[0].set_desc_table(queues[1].desc_table());
  queues[0].set_avail_ring(queues[1].avail_ring());
  queues[0].set_used_ring(queues[1].used_ring());
  queues[0].set_ready(true);
  uint64_t features = 0;
  if (size > 1 && (data[1] & 1)) features |= virtio::Bit(virtio::kFIndirectDesc);
  if (size > 1 && (data[1] & 2)) features |= virtio::Bit(virtio::kFEventIdx);
  if (!queues[0].Activate(*mem, features).ok()) return 0;

  auto vsock = virtio::Vsock::Create(loop, {3, path, 8});
  if (!vsock.ok()) return 0;
  virtio::fuzz::NullInterrupt irq;
  virtio::ActivateContext ctx{mem.get(), queues, &irq, features, [](uint16_t) {}};
  loop.RunSync([&] {
    virtio::Vsock& v = **vsock;
    if (!v.Activate(ctx).ok()) return;
    for (int i = 0; i < 6; ++i) {
      if (!v.ProcessQueue(i % 2 ? virtio::Vsock::kRxQueue : virtio::Vsock::kTxQueue).ok()) break;
    }
    if (v.connections() > 8) std::abort();
    v.Reset();
  });
  return 0;
}
