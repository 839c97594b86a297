#include "virtio/mmio.h"

#include <catch2/catch.hpp>
#include <cstring>

#include "libs/virtio/src/test_env.h"
#include "virtio/rng.h"

namespace virtio {
namespace {

using testing::MockDriver;

struct MmioEnv {
  MmioEnv()
      : mem(test::MakeMemory()),
        loop("test-loop"),
        mmio(std::make_shared<MmioTransport>(std::make_shared<Rng>(), *mem, loop,
                                             [this] { ++irqs; })) {}
  uint32_t Read(uint64_t off) {
    uint32_t v;
    mmio->Read(off, {reinterpret_cast<uint8_t*>(&v), 4});
    return v;
  }
  void Write(uint64_t off, uint32_t v) {
    mmio->Write(off, {reinterpret_cast<const uint8_t*>(&v), 4});
  }
  void Write64(uint64_t low, uint64_t v) {
    Write(low, static_cast<uint32_t>(v));
    Write(low + 4, static_cast<uint32_t>(v >> 32));
  }
  // The driver's side of spec 3.1.1 for queue 0, with `features` accepted.
  void Bringup(MockDriver& drv, uint64_t features) {
    Write(0x70, 0);
    Write(0x70, kStatusAcknowledge);
    Write(0x70, kStatusAcknowledge | kStatusDriver);
    Write(0x24, 0);
    Write(0x20, static_cast<uint32_t>(features));
    Write(0x24, 1);
    Write(0x20, static_cast<uint32_t>(features >> 32));
    Write(0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    Write(0x30, 0);
    Write(0x38, 16);
    Write64(0x80, drv.desc_table().value);
    Write64(0x90, drv.avail_ring().value);
    Write64(0xa0, drv.used_ring().value);
    Write(0x44, 1);
    Write(0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  }
  // Waits (bounded) until the loop has handled everything posted so far.
  void Drain() { loop.RunSync([] {}); }

  std::unique_ptr<vm_memory::GuestMemory> mem;
  EventLoop loop;
  std::atomic<int> irqs{0};
  std::shared_ptr<MmioTransport> mmio;
};

TEST_CASE("mmio: identification registers") {
  MmioEnv env;
  REQUIRE(env.Read(0x000) == 0x74726976);
  REQUIRE(env.Read(0x004) == 2);
  REQUIRE(env.Read(0x008) == 4);  // rng
  REQUIRE(env.Read(0x034) == 256);
  env.Write(0x14, 1);
  REQUIRE((env.Read(0x10) & 1) == 1);  // VERSION_1 is bit 32
}

TEST_CASE("mmio: FEATURES_OK is refused without VERSION_1 or with unknown bits") {
  MmioEnv env;
  env.Write(0x70, kStatusAcknowledge | kStatusDriver);
  env.Write(0x24, 0);
  env.Write(0x20, 0);
  env.Write(0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  REQUIRE((env.Read(0x70) & kStatusFeaturesOk) == 0);
  env.Write(0x24, 1);
  env.Write(0x20, 1 | 0x80000000u);  // VERSION_1 + a bit nobody offered
  env.Write(0x70, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  REQUIRE((env.Read(0x70) & kStatusFeaturesOk) == 0);
}

TEST_CASE("mmio: an rng request is served on the loop and interrupts") {
  MmioEnv env;
  MockDriver drv(*env.mem, GuestAddress(0x10000), 16);
  env.Bringup(drv, Bit(kFVersion1));
  REQUIRE(env.Read(0x70) == 15);
  uint64_t buf = drv.scratch().value;
  drv.AddChain({{buf, 64, true}});
  env.Write(0x50, 0);
  env.Drain();
  REQUIRE(drv.used_idx() == 1);
  REQUIRE(drv.used(0).len == 64);
  REQUIRE(env.irqs == 1);
  REQUIRE(env.Read(0x60) == 1);
  env.Write(0x64, 1);
  REQUIRE(env.Read(0x60) == 0);
}

TEST_CASE("mmio: a broken queue puts the device in needs-reset; reset recovers it") {
  MmioEnv env;
  MockDriver drv(*env.mem, GuestAddress(0x10000), 16);
  env.Bringup(drv, Bit(kFVersion1));
  uint64_t s = drv.scratch().value;
  drv.SetDesc(0, {s, 8, kDescFNext | kDescFWrite, 1});
  drv.SetDesc(1, {s, 8, kDescFNext | kDescFWrite, 0});
  drv.Publish(0);
  env.Write(0x50, 0);
  env.Drain();
  REQUIRE((env.Read(0x70) & kStatusNeedsReset) != 0);
  REQUIRE_THAT(env.mmio->failure(), Catch::Contains("a loop?"));
  REQUIRE((env.Read(0x60) & 2) != 0);  // configuration change interrupt
  uint32_t gen = env.Read(0xfc);
  // Further notifications are ignored, and nothing crashes.
  for (int i = 0; i < 1000; ++i) env.Write(0x50, 0);
  env.Drain();
  REQUIRE(drv.used_idx() == 0);
  // A reset and a fresh bring-up work again.
  env.Write(0x70, 0);
  REQUIRE(env.Read(0x70) == 0);
  REQUIRE(env.Read(0x60) == 0);
  MockDriver fresh(*env.mem, GuestAddress(0x40000), 16);
  env.Bringup(fresh, Bit(kFVersion1));
  fresh.AddChain({{fresh.scratch().value, 16, true}});
  env.Write(0x50, 0);
  env.Drain();
  REQUIRE(fresh.used_idx() == 1);
  REQUIRE(env.Read(0xfc) == gen);
}

TEST_CASE("mmio: a queue outside RAM fails activation with needs-reset") {
  MmioEnv env;
  MockDriver drv(*env.mem, GuestAddress(0x10000), 16);
  env.Write(0x70, 3);
  env.Write(0x24, 1);
  env.Write(0x20, 1);
  env.Write(0x70, 11);
  env.Write(0x30, 0);
  env.Write(0x38, 16);
  env.Write64(0x80, 0xd0000000);  // MMIO, not RAM
  env.Write64(0x90, drv.avail_ring().value);
  env.Write64(0xa0, drv.used_ring().value);
  env.Write(0x44, 1);
  env.Write(0x70, 15);
  REQUIRE((env.Read(0x70) & kStatusNeedsReset) != 0);
  REQUIRE_THAT(env.mmio->failure(), Catch::Contains("descriptor table"));
}

TEST_CASE("mmio: odd-sized and unaligned register accesses are ignored") {
  MmioEnv env;
  uint8_t b[2] = {0xff, 0xff};
  env.mmio->Read(0x0, b);
  REQUIRE(b[0] == 0);
  env.mmio->Write(0x70, std::span<const uint8_t>(b, 1));
  REQUIRE(env.Read(0x70) == 0);
  uint8_t cfg[8];
  env.mmio->Read(0x100, cfg);  // rng has no config: zeros
  REQUIRE(cfg[0] == 0);
}

}  // namespace
}  // namespace virtio
