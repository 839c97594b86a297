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

// Reads the transport's state with its loop held, as a snapshot does.
MmioState SaveHeld(MmioEnv& env) {
  auto hold = env.loop.Hold([&] { return env.mmio->Quiesce(); }, absl::Seconds(5));
  REQUIRE(hold.ok());
  return env.mmio->SaveMmioState();
}

absl::Status RestoreOnLoop(MmioEnv& env, const MmioState& s) {
  absl::Status st;
  env.loop.RunSync([&] { st = env.mmio->RestoreMmioState(s); });
  return st;
}

TEST_CASE("mmio state: a restored transport carries on where the saved one was") {
  MmioEnv a;
  MockDriver drv(*a.mem, GuestAddress(0x10000), 16);
  a.Bringup(drv, Bit(kFVersion1) | Bit(kFEventIdx));
  for (int i = 0; i < 3; ++i) drv.AddChain({{drv.scratch().value, 32, true}});
  a.Write(0x50, 0);
  a.Drain();
  REQUIRE(drv.used_idx() == 3);
  a.Write(0x30, 0);  // QueueSel, to see it come back
  MmioState saved = SaveHeld(a);
  REQUIRE(saved.transport.status == 15);
  REQUIRE(saved.transport.queues.size() == 1);
  REQUIRE(saved.transport.queues[0].next_avail == 3);
  REQUIRE(saved.interrupt_status == 1);

  // A new transport on the same RAM (a restored VM) resumes at index 3.
  MmioEnv b;
  b.mem = std::move(a.mem);
  b.mmio = std::make_shared<MmioTransport>(std::make_shared<Rng>(), *b.mem, b.loop,
                                           [&b] { ++b.irqs; });
  REQUIRE(RestoreOnLoop(b, saved).ok());
  REQUIRE(b.Read(0x70) == 15);
  REQUIRE(b.Read(0x60) == 1);
  REQUIRE(b.Read(0x44) == 1);  // queue 0 ready
  drv.AddChain({{drv.scratch().value, 8, true}});
  b.Write(0x50, 0);
  b.Drain();
  REQUIRE(drv.used_idx() == 4);
  REQUIRE(drv.used(3).len == 8);
  // The kick after a restore serves what is pending and interrupts once.
  int before = b.irqs;
  drv.AddChain({{drv.scratch().value, 4, true}});
  b.loop.RunSync([&] { b.mmio->KickAfterRestore(); });
  b.Drain();
  REQUIRE(drv.used_idx() == 5);
  REQUIRE(b.irqs > before);
}

TEST_CASE("mmio state: a corrupt state is refused naming what is wrong") {
  MmioEnv a;
  MockDriver drv(*a.mem, GuestAddress(0x10000), 16);
  a.Bringup(drv, Bit(kFVersion1));
  const MmioState good = SaveHeld(a);
  auto refused = [&](MmioState s, const char* what) {
    MmioEnv b;
    b.mem = std::move(a.mem);
    b.mmio = std::make_shared<MmioTransport>(std::make_shared<Rng>(), *b.mem, b.loop, [] {});
    absl::Status st = RestoreOnLoop(b, s);
    a.mem = std::move(b.mem);
    INFO(st.message());
    REQUIRE(!st.ok());
    REQUIRE_THAT(std::string(st.message()), Catch::Contains(what));
    b.mmio.reset();
  };
  MmioState s = good;
  s.transport.driver_features |= 1ULL << 40;
  refused(s, "not a subset of the offered");
  s = good;
  s.transport.status |= 0x10;
  refused(s, "bits virtio does not define");
  s = good;
  s.transport.status = kStatusDriverOk | kStatusDriver;
  refused(s, "not a state the driver can reach");
  s = good;
  s.transport.queues.push_back(s.transport.queues[0]);
  refused(s, "2 queues saved, the device has 1");
  s = good;
  s.transport.queues[0].desc = 0xd0000000;
  refused(s, "queue 0: descriptor table");
  s = good;
  s.transport.queues[0].size = 1000;
  refused(s, "queue 0: queue size 1000");
  s = good;
  s.transport.queues[0].next_avail = 100;  // the driver published 0
  refused(s, "more than the queue size behind");
  s = good;
  s.interrupt_status = 4;
  refused(s, "interrupt status 4");
}

TEST_CASE("mmio state: a device that needed a reset stays that way") {
  MmioEnv a;
  MockDriver drv(*a.mem, GuestAddress(0x10000), 16);
  a.Bringup(drv, Bit(kFVersion1));
  MmioState s = SaveHeld(a);
  s.transport.failure = "queue 0: a loop?";
  s.transport.status |= kStatusNeedsReset;
  MmioEnv b;
  b.mem = std::move(a.mem);
  b.mmio = std::make_shared<MmioTransport>(std::make_shared<Rng>(), *b.mem, b.loop, [] {});
  REQUIRE(RestoreOnLoop(b, s).ok());
  REQUIRE((b.Read(0x70) & kStatusNeedsReset) != 0);
  REQUIRE(b.mmio->failure() == "queue 0: a loop?");
  drv.AddChain({{drv.scratch().value, 8, true}});
  b.Write(0x50, 0);
  b.Drain();
  REQUIRE(drv.used_idx() == 0);  // not served until the driver resets it
}

TEST_CASE("EventLoop::Hold waits until ready and keeps other work out") {
  EventLoop loop("hold-test");
  int tries = 0;
  std::atomic<int> ran{0};
  auto hold = loop.Hold([&] { return ++tries >= 3; }, absl::Seconds(5));
  REQUIRE(hold.ok());
  REQUIRE(tries == 3);
  loop.Post([&] { ++ran; });
  absl::SleepFor(absl::Milliseconds(20));
  REQUIRE(ran == 0);  // held
  hold->reset();
  loop.RunSync([] {});
  REQUIRE(ran == 1);
  auto never = loop.Hold([] { return false; }, absl::Milliseconds(30));
  REQUIRE(never.status().code() == absl::StatusCode::kDeadlineExceeded);
  loop.RunSync([] {});  // the loop still runs
}

}  // namespace
}  // namespace virtio
