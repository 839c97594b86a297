// Packed virtqueues: a mock driver plays the guest (spec 2.8).
#include <catch2/catch.hpp>
#include <string>

#include "libs/virtio/src/test_env.h"
#include "virtio/queue.h"

namespace virtio {
namespace {

using testing::PackedMockDriver;

constexpr uint64_t kPacked = Bit(kFRingPacked) | Bit(kFIndirectDesc);

struct PackedEnv {
  explicit PackedEnv(uint16_t size = 8, uint64_t features = kPacked)
      : mem(test::MakeMemory()), queue(256), driver(*mem, GuestAddress(0x10000), size) {
    driver.Configure(queue);
    REQUIRE(queue.Activate(*mem, features).ok());
    REQUIRE(queue.packed());
  }
  // Pops one chain (it must be there).
  DescriptorChain Pop() {
    auto c = queue.Pop();
    REQUIRE(c.ok());
    REQUIRE(c->has_value());
    return **c;
  }
  std::string PopError() {
    auto c = queue.Pop();
    REQUIRE_FALSE(c.ok());
    return std::string(c.status().message());
  }
  std::unique_ptr<vm_memory::GuestMemory> mem;
  Queue queue;
  PackedMockDriver driver;
};

TEST_CASE("packed: chains, buffer IDs and used descriptors") {
  PackedEnv e;
  auto none = e.queue.Pop();
  REQUIRE(none.ok());
  REQUIRE_FALSE(none->has_value());
  uint16_t id = e.driver.AddChain({{0x100000, 512, false}, {0x101000, 16, true}}, false, 5);
  DescriptorChain c = e.Pop();
  REQUIRE(c.head == id);
  REQUIRE(c.buffers.size() == 2);
  REQUIRE(c.readable_bytes == 512);
  REQUIRE(c.writable_bytes == 16);
  REQUIRE(e.queue.PushUsed(c.head, 16).ok());
  auto u = e.driver.PopUsed();
  REQUIRE(u.has_value());
  REQUIRE(u->id == 5);
  REQUIRE(u->len == 16);
  REQUIRE((u->flags & kDescFWrite));
  REQUIRE_FALSE(e.driver.PopUsed().has_value());
}

TEST_CASE("packed: the ring wraps many times, completions out of order") {
  PackedEnv e(8);
  int done = 0;
  for (int round = 0; round < 50; ++round) {
    // Three chains of 1, 2 and 3 descriptors, completed in reverse order.
    uint16_t a = e.driver.AddChain({{0x100000, 8, true}});
    uint16_t b = e.driver.AddChain({{0x100000, 8, false}, {0x101000, 8, true}});
    uint16_t c = e.driver.AddChain({{0x100000, 8, false}, {0x101000, 8, false}, {0x102000, 4, true}});
    DescriptorChain ca = e.Pop(), cb = e.Pop(), cc = e.Pop();
    REQUIRE(ca.head == a);
    REQUIRE(cb.head == b);
    REQUIRE(cc.head == c);
    REQUIRE(cc.buffers.size() == 3);
    REQUIRE(e.queue.PushUsed(cc.head, 4).ok());
    REQUIRE(e.queue.PushUsed(ca.head, 8).ok());
    REQUIRE(e.queue.PushUsed(cb.head, 0).ok());
    for (uint16_t want : {c, a, b}) {
      auto u = e.driver.PopUsed();
      REQUIRE(u.has_value());
      REQUIRE(u->id == want);
      ++done;
    }
    auto more = e.queue.Pop();
    REQUIRE(more.ok());
    REQUIRE_FALSE(more->has_value());
  }
  REQUIRE(done == 150);
}

TEST_CASE("packed: indirect tables") {
  PackedEnv e;
  uint16_t id = e.driver.AddChain({{0x100000, 100, false}, {0x101000, 200, true}}, true);
  DescriptorChain c = e.Pop();
  REQUIRE(c.head == id);
  REQUIRE(c.buffers.size() == 2);
  REQUIRE(c.readable_bytes == 100);
  REQUIRE(c.writable_bytes == 200);
  PackedEnv plain(8, Bit(kFRingPacked));  // INDIRECT_DESC not negotiated
  plain.driver.AddChain({{0x100000, 100, false}}, true);
  REQUIRE(plain.PopError().find("INDIRECT_DESC") != std::string::npos);
}

TEST_CASE("packed: hostile rings are errors naming the fault") {
  PackedEnv e(8);
  const uint16_t avail = e.driver.AvailFlags();
  SECTION("a chain longer than the queue") {
    for (uint16_t i = 0; i < 8; ++i) {
      e.driver.SetDesc(i, {0x100000, 8, 0, static_cast<uint16_t>(avail | kDescFNext)});
    }
    REQUIRE(e.PopError().find("longer than the queue size") != std::string::npos);
  }
  SECTION("a chain whose second descriptor is not available") {
    e.driver.SetDesc(1, {0x100000, 8, 0, 0});
    e.driver.SetDesc(0, {0x100000, 8, 0, static_cast<uint16_t>(avail | kDescFNext)});
    REQUIRE(e.PopError().find("not available") != std::string::npos);
  }
  SECTION("a buffer ID outside the queue") {
    e.driver.SetDesc(0, {0x100000, 8, 9, avail});
    REQUIRE(e.PopError().find("buffer ID 9 is outside") != std::string::npos);
  }
  SECTION("a buffer ID reused while in flight") {
    e.driver.AddChain({{0x100000, 8, false}}, false, 3);
    e.driver.AddChain({{0x100000, 8, false}}, false, 3);
    e.Pop();
    REQUIRE(e.PopError().find("still in flight") != std::string::npos);
  }
  SECTION("a buffer outside guest RAM") {
    e.driver.SetDesc(0, {1ULL << 40, 8, 0, avail});
    REQUIRE(e.PopError().find("not in guest RAM") != std::string::npos);
  }
  SECTION("a length near 2^32 in RAM's last bytes") {
    e.driver.SetDesc(0, {test::kRamSize - 16, 0xfffffff0, 0, avail});
    REQUIRE(e.PopError().find("not in guest RAM") != std::string::npos);
  }
  SECTION("indirect inside a NEXT chain") {
    e.driver.SetDesc(1, {0x100000, 16, 0, static_cast<uint16_t>(avail | kDescFIndirect)});
    e.driver.SetDesc(0, {0x100000, 8, 0, static_cast<uint16_t>(avail | kDescFNext)});
    REQUIRE(e.PopError().find("indirect descriptor in a NEXT chain") != std::string::npos);
  }
  SECTION("a used ID that was never made available") {
    REQUIRE_FALSE(e.queue.PushUsed(2, 0).ok());
    REQUIRE_FALSE(e.queue.PushUsed(200, 0).ok());
  }
}

TEST_CASE("packed: queue sizes need not be powers of two, but fit the device") {
  auto mem = test::MakeMemory();
  Queue q(256);
  PackedMockDriver d(*mem, GuestAddress(0x10000), 6);
  d.Configure(q);
  REQUIRE(q.Activate(*mem, kPacked).ok());
  Queue small(4);
  PackedMockDriver d2(*mem, GuestAddress(0x20000), 6);
  d2.Configure(small);
  REQUIRE_FALSE(small.Activate(*mem, kPacked).ok());
}

TEST_CASE("packed: driver event suppression") {
  SECTION("enable and disable") {
    PackedEnv e;
    e.driver.AddChain({{0x100000, 8, true}});
    REQUIRE(e.queue.PushUsed(e.Pop().head, 8).ok());
    REQUIRE(e.queue.NeedsInterrupt());
    REQUIRE_FALSE(e.queue.NeedsInterrupt());  // nothing new
    e.driver.SetDriverEvent(kRingEventDisable);
    e.driver.AddChain({{0x100000, 8, true}});
    REQUIRE(e.queue.PushUsed(e.Pop().head, 8).ok());
    REQUIRE_FALSE(e.queue.NeedsInterrupt());
  }
  SECTION("a descriptor event with EVENT_IDX") {
    PackedEnv e(8, kPacked | Bit(kFEventIdx));
    e.driver.AddChain({{0x100000, 8, true}});
    REQUIRE(e.queue.PushUsed(e.Pop().head, 8).ok());
    REQUIRE(e.queue.NeedsInterrupt());  // first decision: always
    // Interrupt once used position 3 (wrap 1) is passed.
    e.driver.SetDriverEvent(kRingEventDesc, 3, true);
    int fired = 0;
    for (int i = 0; i < 4; ++i) {
      e.driver.AddChain({{0x100000, 8, true}});
      REQUIRE(e.queue.PushUsed(e.Pop().head, 8).ok());
      if (e.queue.NeedsInterrupt()) ++fired;  // used position now 2, 3, 4, 5
    }
    REQUIRE(fired == 1);
    // After the wrap: event at offset 1, wrap 0.
    e.driver.SetDriverEvent(kRingEventDesc, 1, false);
    fired = 0;
    for (int i = 0; i < 5; ++i) {
      e.driver.AddChain({{0x100000, 8, true}});
      REQUIRE(e.queue.PushUsed(e.Pop().head, 8).ok());
      if (e.queue.NeedsInterrupt()) ++fired;  // 6, 7, 0 (wrapped), 1, 2
    }
    REQUIRE(fired == 1);
  }
}

TEST_CASE("packed: device event suppression follows EnableNotification") {
  PackedEnv e;
  auto more = e.queue.EnableNotification(false);
  REQUIRE(more.ok());
  REQUIRE(e.driver.device_event_flags() == kRingEventDisable);
  e.driver.AddChain({{0x100000, 8, true}});
  more = e.queue.EnableNotification(true);
  REQUIRE(more.ok());
  REQUIRE(*more);  // a chain arrived meanwhile
  REQUIRE(e.driver.device_event_flags() == kRingEventEnable);
}

TEST_CASE("packed state: a restored queue resumes past a wrap, with a chain in flight") {
  PackedEnv e(4);
  for (int i = 0; i < 5; ++i) {  // wrap the ring once
    e.driver.AddChain({{0x100000, 16, true}});
    DescriptorChain c = e.Pop();
    REQUIRE(e.queue.PushUsed(c.head, 16).ok());
    REQUIRE(e.driver.PopUsed().has_value());
  }
  e.driver.AddChain({{0x100000, 8, true}});
  DescriptorChain kept = e.Pop();  // held by the device over the snapshot
  QueueState s = e.queue.SaveState();
  REQUIRE(s.active);
  REQUIRE(s.in_flight.size() == 4);
  Queue restored(256);
  REQUIRE(restored.RestoreState(s, *e.mem, kPacked).ok());
  REQUIRE(restored.packed());
  REQUIRE(restored.PushUsed(kept.head, 8).ok());
  auto u = e.driver.PopUsed();
  REQUIRE(u.has_value());
  REQUIRE(u->len == 8);
  e.driver.AddChain({{0x100000, 4, true}});
  auto c = restored.Pop();
  REQUIRE(c.ok());
  REQUIRE(c->has_value());

  QueueState bad = s;
  bad.avail_pos = 4;
  Queue q(256);
  REQUIRE_THAT(std::string(q.RestoreState(bad, *e.mem, kPacked).message()),
               Catch::Contains("outside the ring of 4"));
  bad = s;
  bad.in_flight.assign(4, 3);
  REQUIRE_THAT(std::string(q.RestoreState(bad, *e.mem, kPacked).message()),
               Catch::Contains("hold 12 descriptors"));
  bad = s;
  bad.in_flight.resize(2);
  REQUIRE_THAT(std::string(q.RestoreState(bad, *e.mem, kPacked).message()),
               Catch::Contains("2 entries, not 4"));
  bad = s;
  bad.ready = false;
  REQUIRE_THAT(std::string(q.RestoreState(bad, *e.mem, kPacked).message()),
               Catch::Contains("must be ready"));
}

}  // namespace
}  // namespace virtio
