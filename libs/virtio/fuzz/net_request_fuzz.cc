// Fuzzes virtio-net's tx and rx chain handling: guest memory from the
// input (see fuzz_env.h), both queues on the same rings, and a datagram
// socketpair standing in for the TAP (two frames already waiting to be
// received). Chains may be served or break the device; nothing may crash,
// hang, or touch memory outside the guest.
#include <sys/socket.h>
#include <unistd.h>

#include "libs/virtio/fuzz/fuzz_env.h"
#include "virtio/net.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static virtio::EventLoop loop("net-fuzz");
  virtio::Queue queues[2] = {virtio::Queue(256), virtio::Queue(256)};
  auto mem = virtio::fuzz::MakeGuest(data, size, queues[1]);
  if (!mem) return 0;
  const uint64_t features = virtio::fuzz::FeaturesOf(data, size);
  if (!virtio::fuzz::ShareRings(*mem, queues[1], queues[0], features)) return 0;

  int sv[2];
  if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  uint8_t frame[200] = {};
  (void)!write(sv[1], frame, 60);
  (void)!write(sv[1], frame, sizeof(frame));
  virtio::Tap tap;
  tap.fd.reset(sv[0]);
  tap.name = "fuzz";
  {
    virtio::Net net(loop, std::move(tap), {});
    virtio::fuzz::NullInterrupt irq;
    virtio::ActivateContext ctx{mem.get(), queues, &irq, features, [](uint16_t) {}};
    loop.RunSync([&] {
      if (!net.Activate(ctx).ok()) return;
      for (int i = 0; i < 4; ++i) {
        if (!net.ProcessQueue(i % 2 ? virtio::Net::kTxQueue : virtio::Net::kRxQueue).ok()) break;
      }
      net.Reset();
    });
  }
  close(sv[1]);
  return 0;
}
