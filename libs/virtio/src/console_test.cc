#include "virtio/console.h"

#include <catch2/catch.hpp>

#include "libs/virtio/src/test_env.h"
#include "virtio/rng.h"

namespace virtio {
namespace {

TEST_CASE("virtio-console: transmit goes to the output, input to the receive queue") {
  auto mem = test::MakeMemory();
  EventLoop loop("console-test");
  std::string out;
  Console con(loop, [&](std::string_view s) { out += s; });
  Queue queues[2] = {Queue(256), Queue(256)};
  testing::MockDriver rx(*mem, GuestAddress(0x10000), 8);
  testing::MockDriver tx(*mem, GuestAddress(0x80000), 8);
  rx.Configure(queues[0]);
  tx.Configure(queues[1]);
  REQUIRE(queues[0].Activate(*mem, 0).ok());
  REQUIRE(queues[1].Activate(*mem, 0).ok());
  test::CountingInterrupt irq;
  REQUIRE(con.SendInput("typed early") == 11);  // before activation: held
  loop.RunSync([&] {
    REQUIRE(con.Activate({mem.get(), queues, &irq, 0, [](uint16_t) {}}).ok());
  });

  std::string msg = "hello from the guest\n";
  uint64_t buf = tx.scratch().value;
  REQUIRE(mem->Write(GuestAddress(buf), {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()}).ok());
  tx.AddChain({{buf, static_cast<uint32_t>(msg.size()), false}});
  loop.RunSync([&] { REQUIRE(con.ProcessQueue(1).ok()); });
  REQUIRE(out == msg);

  uint64_t in = rx.scratch().value;
  rx.AddChain({{in, 64, true}});
  loop.RunSync([&] { REQUIRE(con.ProcessQueue(0).ok()); });
  REQUIRE(rx.used_idx() == 1);
  REQUIRE(rx.used(0).len == 11);
  std::string got(11, '\0');
  REQUIRE(mem->Read(GuestAddress(in), {reinterpret_cast<uint8_t*>(got.data()), 11}).ok());
  REQUIRE(got == "typed early");
  loop.RunSync([&] { con.Reset(); });
}

TEST_CASE("virtio-rng: fills the buffer, capped per request") {
  test::QueueEnv env;
  Rng rng;
  test::CountingInterrupt irq;
  REQUIRE(rng.Activate({env.mem.get(), {&env.queue, 1}, &irq, 0, [](uint16_t) {}}).ok());
  uint64_t s = env.driver.scratch().value;
  env.driver.AddChain({{s, 256, true}});
  env.driver.AddChain({{s + 4096, 0x100000, true}});
  REQUIRE(rng.ProcessQueue(0).ok());
  REQUIRE(env.driver.used(0).len == 256);
  REQUIRE(env.driver.used(1).len == Rng::kMaxRequest);
  std::vector<uint8_t> got(256);
  REQUIRE(env.mem->Read(GuestAddress(s), got).ok());
  REQUIRE(got != std::vector<uint8_t>(256, 0));
}

}  // namespace
}  // namespace virtio
