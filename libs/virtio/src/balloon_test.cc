#include "virtio/balloon.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "libs/virtio/src/test_env.h"

namespace virtio {
namespace {

constexpr uint64_t kDataPfn = 0x200;  // 2 MiB: test pages live above the rings

// inflate, deflate, stats, reporting queues with a mock driver each.
struct BalloonEnv {
  explicit BalloonEnv(BalloonOptions o = {}) : balloon(loop, o) {}
  ~BalloonEnv() {
    loop.RunSync([&] { balloon.Reset(); });
  }

  void Activate(uint64_t features) {
    for (int i = 0; i < 4; ++i) {
      drivers[i].Configure(queues[i]);
      REQUIRE(queues[i].Activate(*mem, 0).ok());
    }
    ActivateContext ctx{mem.get(),
                        queues,
                        &irq,
                        features | Bit(kFVersion1),
                        [this](uint16_t q) { ++again[q]; },
                        [this] { ++config_changes; }};
    loop.RunSync([&] { REQUIRE(balloon.Activate(ctx).ok()); });
  }
  absl::Status Process(uint16_t q) {
    absl::Status s;
    loop.RunSync([&] { s = balloon.ProcessQueue(q); });
    return s;
  }
  // Puts `pfns` in guest memory and submits them on `q`.
  void SubmitPfns(uint16_t q, const std::vector<uint32_t>& pfns) {
    uint64_t at = drivers[q].scratch().value;
    REQUIRE(mem->Write(GuestAddress(at),
                       {reinterpret_cast<const uint8_t*>(pfns.data()), pfns.size() * 4})
                .ok());
    drivers[q].AddChain({{at, static_cast<uint32_t>(pfns.size() * 4), false}});
  }
  void Fill(uint64_t pfn, uint64_t pages, uint8_t value) {
    std::vector<uint8_t> data(pages * 4096, value);
    REQUIRE(mem->Write(GuestAddress(pfn * 4096), data).ok());
  }
  bool AllZero(uint64_t pfn, uint64_t pages) {
    std::vector<uint8_t> data(pages * 4096);
    REQUIRE(mem->Read(GuestAddress(pfn * 4096), data).ok());
    return data == std::vector<uint8_t>(data.size(), 0);
  }
  // 512-byte blocks the memfd behind guest RAM holds.
  int64_t AllocatedBlocks() {
    struct stat st;
    REQUIRE(::fstat(mem->regions()[0]->fd(), &st) == 0);
    return st.st_blocks;
  }
  bool WaitUsed(uint16_t q, uint16_t n) {
    for (int i = 0; i < 300 && drivers[q].used_idx() != n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return drivers[q].used_idx() == n;
  }

  std::unique_ptr<vm_memory::GuestMemory> mem = test::MakeMemory();
  EventLoop loop{"balloon-test"};
  Queue queues[4] = {Queue(256), Queue(256), Queue(256), Queue(256)};
  testing::MockDriver drivers[4] = {
      {*mem, GuestAddress(0x10000), 16},
      {*mem, GuestAddress(0x60000), 16},
      {*mem, GuestAddress(0xb0000), 16},
      {*mem, GuestAddress(0x100000), 16},
  };
  test::CountingInterrupt irq;
  int again[4] = {};
  int config_changes = 0;
  Balloon balloon;
};

TEST_CASE("virtio-balloon: target and actual in the config space") {
  BalloonEnv e;
  e.balloon.SetTarget(2);  // before the driver is up: no interrupt to raise
  uint32_t cfg[2] = {};
  e.balloon.ReadConfig(0, {reinterpret_cast<uint8_t*>(cfg), 8});
  REQUIRE(cfg[0] == 512);
  e.Activate(0);
  e.balloon.SetTarget(3);
  e.loop.RunSync([] {});  // the config change is raised on the loop
  REQUIRE(e.config_changes == 1);
  REQUIRE(e.balloon.target_pages() == 768);
  uint32_t actual = 300;
  e.balloon.WriteConfig(4, {reinterpret_cast<uint8_t*>(&actual), 4});
  REQUIRE(e.balloon.actual_pages() == 300);
  // num_pages is the host's: a driver write is ignored.
  e.balloon.WriteConfig(0, {reinterpret_cast<uint8_t*>(&actual), 4});
  REQUIRE(e.balloon.target_pages() == 768);
  e.balloon.SetTarget(~0ULL);  // clamped, not wrapped
  REQUIRE(e.balloon.target_pages() == UINT32_MAX);
  REQUIRE(e.balloon.num_queues() == 4);
  REQUIRE((e.balloon.features() & Bit(kBalloonFDeflateOnOom)) == 0);
  REQUIRE((e.balloon.features() & Bit(kBalloonFReporting)) != 0);
}

TEST_CASE("virtio-balloon: inflated pages read as zero and leave the memfd") {
  BalloonEnv e;
  e.Activate(0);
  e.Fill(kDataPfn, 32, 0xab);
  // Two runs out of order, one duplicate, and PFNs outside RAM.
  std::vector<uint32_t> pfns;
  for (uint32_t i = 16; i < 32; ++i) pfns.push_back(kDataPfn + i);
  for (uint32_t i = 0; i < 8; ++i) pfns.push_back(kDataPfn + i);
  pfns.push_back(kDataPfn + 3);
  pfns.push_back(0x100000);                                          // 4 GiB: no RAM there
  pfns.push_back(0xffffffff);                                        // the largest PFN
  pfns.push_back(static_cast<uint32_t>(test::kRamSize / 4096 - 1));  // last page
  e.SubmitPfns(Balloon::kInflateQueue, pfns);
  int64_t before = e.AllocatedBlocks();  // after the driver wrote its rings
  REQUIRE(e.Process(Balloon::kInflateQueue).ok());
  REQUIRE(e.drivers[0].used_idx() == 1);
  // 24 pages = 192 blocks of 512 bytes went back to the host (measured
  // first: reading a hole through the shared mapping allocates it again).
  REQUIRE(before - e.AllocatedBlocks() >= 24 * 8);
  REQUIRE(e.AllZero(kDataPfn, 8));
  REQUIRE_FALSE(e.AllZero(kDataPfn + 8, 1));  // not in the list
  REQUIRE(e.AllZero(kDataPfn + 16, 16));
  BalloonCounters c = e.balloon.counters();
  REQUIRE(c.inflated_pages == 25);  // 24 + the last page of RAM
  REQUIRE(c.skipped_pfns == 2);
  REQUIRE(e.irq.queue == 1);

  e.SubmitPfns(Balloon::kDeflateQueue, {kDataPfn, kDataPfn + 1});
  REQUIRE(e.Process(Balloon::kDeflateQueue).ok());
  REQUIRE(e.drivers[1].used_idx() == 1);
  REQUIRE(e.balloon.counters().deflated_pages == 2);
}

TEST_CASE("virtio-balloon: hostile PFN lists break the device with a reason") {
  BalloonEnv e;
  e.Activate(0);
  uint64_t at = e.drivers[0].scratch().value;
  SECTION("a length that is not whole PFNs") {
    e.drivers[0].AddChain({{at, 6, false}});
    REQUIRE_THAT(std::string(e.Process(0).message()), Catch::Contains("32-bit PFNs"));
  }
  SECTION("more PFNs than a request may carry") {
    e.drivers[0].AddChain({{at, (Balloon::kMaxPfnsPerChain + 1) * 4, false}});
    REQUIRE_THAT(std::string(e.Process(0).message()), Catch::Contains("at most 4096"));
  }
  SECTION("an empty list is fine") {
    e.drivers[0].AddChain({{at, 0, false}});
    REQUIRE(e.Process(0).ok());
    REQUIRE(e.drivers[0].used_idx() == 1);
  }
}

TEST_CASE("virtio-balloon: one call serves at most a queue's worth of requests") {
  BalloonEnv e;
  e.Activate(0);
  for (int i = 0; i < 16; ++i) e.SubmitPfns(Balloon::kDeflateQueue, {1});
  REQUIRE(e.Process(Balloon::kDeflateQueue).ok());
  REQUIRE(e.drivers[1].used_idx() == 16);
  REQUIRE(e.again[1] == 1);
}

struct Stat {
  uint16_t tag;
  uint64_t val;
} __attribute__((packed));

void SubmitStats(BalloonEnv& e, uint16_t q, const std::vector<Stat>& stats, uint64_t at) {
  REQUIRE(e.mem
              ->Write(GuestAddress(at),
                      {reinterpret_cast<const uint8_t*>(stats.data()), stats.size() * sizeof(Stat)})
              .ok());
  e.drivers[q].AddChain({{at, static_cast<uint32_t>(stats.size() * sizeof(Stat)), false}});
}

TEST_CASE("virtio-balloon: statistics are kept and the buffer returned on request") {
  BalloonEnv e;
  e.Activate(Bit(kBalloonFStatsVq));
  uint64_t at = e.drivers[2].scratch().value;
  SubmitStats(e, 2, {{kBalloonSMemFree, 1000}, {kBalloonSMemTot, 4000}, {99, 7}}, at);
  REQUIRE(e.Process(2).ok());
  REQUIRE(e.drivers[2].used_idx() == 0);  // the device holds it
  auto s = e.balloon.stats();
  REQUIRE(s.size() == 3);
  REQUIRE(s[0].tag == kBalloonSMemFree);
  REQUIRE(s[0].val == 1000);
  REQUIRE(s[2].tag == 99);  // unknown tags are kept too
  e.balloon.RequestStats();
  REQUIRE(e.WaitUsed(2, 1));
  SubmitStats(e, 2, {{kBalloonSMemFree, 500}}, at);
  REQUIRE(e.Process(2).ok());
  REQUIRE(e.balloon.stats()[0].val == 500);
  REQUIRE(e.balloon.counters().stats_updates == 2);

  SubmitStats(e, 2, {{kBalloonSMemFree, 1}}, at);
  SECTION("a second buffer returns the first") {
    REQUIRE(e.Process(2).ok());
    REQUIRE(e.drivers[2].used_idx() == 2);
  }
  SECTION("a torn entry breaks the device") {
    e.drivers[2].AddChain({{at, 15, false}});
    REQUIRE_THAT(std::string(e.Process(2).message()), Catch::Contains("10-byte entries"));
  }
}

TEST_CASE("virtio-balloon: stats are asked for on the polling interval") {
  BalloonEnv e({.stats_interval_s = 1});
  e.Activate(Bit(kBalloonFStatsVq));
  SubmitStats(e, 2, {{kBalloonSMemFree, 1}}, e.drivers[2].scratch().value);
  REQUIRE(e.Process(2).ok());
  REQUIRE(e.WaitUsed(2, 1));  // within 3 s
}

TEST_CASE("virtio-balloon: reported free ranges are released") {
  BalloonEnv e;
  // Without STATS_VQ the reporting queue is the third one.
  e.Activate(Bit(kBalloonFReporting));
  e.Fill(kDataPfn, 64, 0x5a);
  e.drivers[2].AddChain(
      {{kDataPfn * 4096, 32 * 4096, true}, {(kDataPfn + 48) * 4096, 16 * 4096, true}});
  int64_t before = e.AllocatedBlocks();
  REQUIRE(e.Process(2).ok());
  REQUIRE(e.drivers[2].used_idx() == 1);
  REQUIRE(before - e.AllocatedBlocks() >= 48 * 8);
  REQUIRE(e.AllZero(kDataPfn, 32));
  REQUIRE_FALSE(e.AllZero(kDataPfn + 32, 16));
  REQUIRE(e.AllZero(kDataPfn + 48, 16));
  REQUIRE(e.balloon.counters().reported_bytes == 48 * 4096);
}

}  // namespace
}  // namespace virtio
