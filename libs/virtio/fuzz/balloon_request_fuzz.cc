// Fuzzes virtio-balloon request parsing: guest memory from the input (see
// fuzz_env.h) with the inflate, deflate, stats and reporting queues all on
// the same rings. PFN lists, stats buffers and reported ranges may punch
// holes anywhere in the guest's RAM, or break the device; nothing may
// crash, hang, or touch memory outside the guest.
#include "libs/virtio/fuzz/fuzz_env.h"
#include "virtio/balloon.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static virtio::EventLoop loop("balloon-fuzz");
  virtio::Queue queues[4] = {virtio::Queue(256), virtio::Queue(256), virtio::Queue(256),
                             virtio::Queue(256)};
  auto mem = virtio::fuzz::MakeGuest(data, size, queues[0]);
  if (!mem) return 0;
  uint64_t features = virtio::fuzz::FeaturesOf(data, size);
  for (int i = 1; i < 4; ++i) {
    if (!virtio::fuzz::ShareRings(*mem, queues[0], queues[i], features)) return 0;
  }
  if (size > 1 && (data[1] & 8)) features |= virtio::Bit(virtio::kBalloonFStatsVq);
  if (size > 1 && (data[1] & 16)) features |= virtio::Bit(virtio::kBalloonFReporting);
  virtio::Balloon balloon(loop, {});
  virtio::fuzz::NullInterrupt irq;
  virtio::ActivateContext ctx{mem.get(), queues, &irq, features, [](uint16_t) {}};
  loop.RunSync([&] {
    if (!balloon.Activate(ctx).ok()) return;
    for (uint16_t q = 0; q < 4; ++q) {
      if (!balloon.ProcessQueue(q).ok()) break;
    }
    balloon.Reset();
  });
  return 0;
}
