#include "virtio/queue.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "libs/virtio/src/test_env.h"

namespace virtio {
namespace {

using test::QueueEnv;

std::string PopError(Queue& q) {
  auto r = q.Pop();
  return r.ok() ? "" : std::string(r.status().message());
}

TEST_CASE("queue: a direct chain comes back readable-then-writable") {
  QueueEnv env;
  uint64_t s = env.driver.scratch().value;
  env.driver.AddChain({{s, 16, false}, {s + 16, 100, false}, {s + 200, 512, true}});
  auto c = env.queue.Pop();
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  REQUIRE((*c)->buffers.size() == 3);
  REQUIRE((*c)->readable_bytes == 116);
  REQUIRE((*c)->writable_bytes == 512);
  REQUIRE_FALSE(env.queue.Pop()->has_value());
  REQUIRE(env.queue.PushUsed((*c)->head, 512).ok());
  REQUIRE(env.driver.used_idx() == 1);
  REQUIRE(env.driver.used(0).id == (*c)->head);
  REQUIRE(env.driver.used(0).len == 512);
}

TEST_CASE("queue: the avail index is read in one piece while the driver stores it") {
  // The driver moves avail idx between 0x4bff and 0x4c00 as fast as it can;
  // a byte-wise read could see 0x4cff or 0x4b00 ("available index jumped").
  QueueEnv env;
  env.driver.SetDesc(0, {env.driver.scratch().value, 8, 0, 0});  // every avail slot: head 0
  const vm_memory::GuestRegion* r = env.mem->FindRegion(env.driver.avail_ring());
  REQUIRE(r != nullptr);
  auto* idx = reinterpret_cast<uint16_t*>(r->host_address().value +
                                          (env.driver.avail_ring().value - r->start().value) + 2);
  std::atomic_ref<uint16_t>(*idx).store(0x4bff);
  std::atomic<bool> stop{false};
  std::thread driver([&] {
    std::atomic_ref<uint16_t> a(*idx);
    while (!stop.load(std::memory_order_relaxed)) {
      a.store(0x4bff, std::memory_order_relaxed);
      a.store(0x4c00, std::memory_order_relaxed);
    }
  });
  std::string error;
  for (int i = 0; i < 200000 && error.empty(); i++) {
    env.queue.set_indices(0x4bff, 0);
    error = PopError(env.queue);
  }
  stop = true;
  driver.join();
  REQUIRE(error == "");
}

TEST_CASE("queue: an indirect chain is followed") {
  QueueEnv env;
  uint64_t s = env.driver.scratch().value;
  env.driver.AddChain({{s, 16, false}, {s + 16, 4096, true}, {s + 8192, 1, true}}, true);
  auto c = env.queue.Pop();
  REQUIRE(c.ok());
  REQUIRE((*c)->buffers.size() == 3);
  REQUIRE((*c)->writable_bytes == 4097);
}

TEST_CASE("queue: indirect without the feature is refused") {
  QueueEnv env(16, 0);
  uint64_t s = env.driver.scratch().value;
  env.driver.AddChain({{s, 16, false}}, true);
  REQUIRE_THAT(PopError(env.queue), Catch::Contains("INDIRECT_DESC was not negotiated"));
}

TEST_CASE("queue: a descriptor loop ends the walk") {
  QueueEnv env;
  uint64_t s = env.driver.scratch().value;
  env.driver.SetDesc(0, {s, 8, kDescFNext, 1});
  env.driver.SetDesc(1, {s, 8, kDescFNext, 0});
  env.driver.Publish(0);
  REQUIRE_THAT(PopError(env.queue), Catch::Contains("longer than the queue size"));
}

TEST_CASE("queue: a loop inside an indirect table ends the walk") {
  QueueEnv env;
  uint64_t s = env.driver.scratch().value;
  GuestAddress table(s + 0x10000);
  env.driver.WriteIndirect(table, {{s, 8, kDescFNext, 1}, {s, 8, kDescFNext, 0}});
  env.driver.SetDesc(0, {table.value, 32, kDescFIndirect, 0});
  env.driver.Publish(0);
  REQUIRE_THAT(PopError(env.queue), Catch::Contains("longer than its table"));
}

TEST_CASE("queue: nested indirect tables are refused") {
  QueueEnv env;
  uint64_t s = env.driver.scratch().value;
  GuestAddress table(s + 0x10000);
  env.driver.WriteIndirect(table, {{s + 0x20000, 16, kDescFIndirect, 0}});
  env.driver.SetDesc(0, {table.value, 16, kDescFIndirect, 0});
  env.driver.Publish(0);
  REQUIRE_THAT(PopError(env.queue), Catch::Contains("indirect table inside an indirect table"));
}

TEST_CASE("queue: buffers outside RAM and lengths near 2^32 are refused") {
  uint64_t bad[][2] = {
      {0xfffffffffffff000ULL, 0x2000},  // wraps the address space
      {test::kRamSize - 8, 16},         // runs off the end of RAM
      {0xc0000000, 4},                  // in the MMIO hole
      {0x20000, 0xfffffff0},            // length near 2^32
  };
  for (auto& b : bad) {
    QueueEnv env;
    env.driver.SetDesc(0, {b[0], static_cast<uint32_t>(b[1]), 0, 0});
    env.driver.Publish(0);
    REQUIRE_THAT(PopError(env.queue), Catch::Contains("not in guest RAM"));
  }
}

TEST_CASE("queue: head and next indices past the queue size are refused") {
  QueueEnv env;
  env.driver.Publish(16);  // queue size 16
  REQUIRE_THAT(PopError(env.queue), Catch::Contains("outside the queue"));
  QueueEnv env2;
  env2.driver.SetDesc(0, {env2.driver.scratch().value, 8, kDescFNext, 300});
  env2.driver.Publish(0);
  REQUIRE_THAT(PopError(env2.queue), Catch::Contains("outside the queue"));
}

TEST_CASE("queue: the available index may not run ahead by more than the size") {
  QueueEnv env;
  env.driver.SetDesc(0, {env.driver.scratch().value, 8, 0, 0});
  env.driver.Publish(0, 17);
  REQUIRE_THAT(PopError(env.queue), Catch::Contains("more than the queue size 16"));
}

TEST_CASE("queue: a readable buffer after a writable one is refused") {
  QueueEnv env;
  uint64_t s = env.driver.scratch().value;
  env.driver.AddChain({{s, 8, true}, {s + 8, 8, false}});
  REQUIRE_THAT(PopError(env.queue), Catch::Contains("after a device-writable"));
}

TEST_CASE("queue: INDIRECT together with NEXT is refused") {
  QueueEnv env;
  uint64_t s = env.driver.scratch().value;
  env.driver.SetDesc(0, {s, 16, kDescFIndirect | kDescFNext, 1});
  env.driver.Publish(0);
  REQUIRE_THAT(PopError(env.queue), Catch::Contains("both INDIRECT and NEXT"));
}

TEST_CASE("queue: activation checks size and ring placement") {
  auto mem = test::MakeMemory();
  Queue q(256);
  testing::MockDriver drv(*mem, GuestAddress(0x10000), 16);
  drv.Configure(q);
  q.set_size(24);
  REQUIRE_THAT(std::string(q.Activate(*mem, 0).message()), Catch::Contains("power of 2"));
  q.set_size(16);
  q.set_used_ring(GuestAddress(test::kRamSize - 16));
  REQUIRE_THAT(std::string(q.Activate(*mem, 0).message()), Catch::Contains("used ring"));
  q.set_used_ring(drv.used_ring());
  q.set_desc_table(GuestAddress(0x10008));
  REQUIRE_THAT(std::string(q.Activate(*mem, 0).message()), Catch::Contains("aligned"));
  q.set_desc_table(drv.desc_table());
  REQUIRE(q.Activate(*mem, 0).ok());
}

TEST_CASE("queue: interrupt suppression without EVENT_IDX") {
  QueueEnv env;
  uint64_t s = env.driver.scratch().value;
  env.driver.AddChain({{s, 8, true}});
  auto c = env.queue.Pop();
  REQUIRE(env.queue.PushUsed((*c)->head, 8).ok());
  REQUIRE(env.queue.NeedsInterrupt());
  REQUIRE_FALSE(env.queue.NeedsInterrupt());  // nothing new
  env.driver.SetAvailFlags(kAvailFNoInterrupt);
  env.driver.AddChain({{s, 8, true}});
  c = env.queue.Pop();
  REQUIRE(env.queue.PushUsed((*c)->head, 8).ok());
  REQUIRE_FALSE(env.queue.NeedsInterrupt());
}

TEST_CASE("queue: EVENT_IDX interrupts only when used_event is passed") {
  QueueEnv env(16, Bit(kFEventIdx));
  uint64_t s = env.driver.scratch().value;
  env.driver.SetUsedEvent(2);  // interrupt when used idx passes 2
  for (int i = 0; i < 4; ++i) env.driver.AddChain({{s, 8, true}});
  std::vector<bool> wanted;
  for (int i = 0; i < 4; ++i) {
    auto c = env.queue.Pop();
    REQUIRE(env.queue.PushUsed((*c)->head, 8).ok());
    wanted.push_back(env.queue.NeedsInterrupt());
  }
  // The first decision always interrupts; then only the push to index 3.
  REQUIRE(wanted == std::vector<bool>{true, false, true, false});
  REQUIRE(env.driver.avail_event() == 4);  // the device wants the next one
}

TEST_CASE("chain reader and writer walk buffers in order") {
  QueueEnv env;
  uint64_t s = env.driver.scratch().value;
  std::vector<uint8_t> data = {1, 2, 3, 4, 5, 6, 7};
  REQUIRE(env.mem->Write(GuestAddress(s), {data.data(), 3}).ok());
  REQUIRE(env.mem->Write(GuestAddress(s + 100), {data.data() + 3, 4}).ok());
  env.driver.AddChain({{s, 3, false}, {s + 100, 4, false}, {s + 200, 2, true}, {s + 300, 5, true}});
  auto c = env.queue.Pop();
  ChainReader r(*env.mem, **c);
  std::vector<uint8_t> got(7);
  REQUIRE(r.Read(got).ok());
  REQUIRE(got == data);
  REQUIRE_FALSE(r.Read(std::span<uint8_t>(got.data(), 1)).ok());
  ChainWriter w(*env.mem, **c);
  REQUIRE(w.Write(data).ok() == true);  // 7 bytes: 2 + 5
  REQUIRE(w.written() == 7);
  REQUIRE(env.mem->ReadObj<uint8_t>(GuestAddress(s + 300)).value() == 3);
  REQUIRE_FALSE(w.WriteObj<uint8_t>(0).ok());
}

}  // namespace
}  // namespace virtio
