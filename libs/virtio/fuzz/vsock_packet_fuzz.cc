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
  const uint64_t features = virtio::fuzz::FeaturesOf(data, size);
  if (!virtio::fuzz::ShareRings(*mem, queues[1], queues[0], features)) return 0;

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
