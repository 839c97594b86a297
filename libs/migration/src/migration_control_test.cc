// MigrationControl: a running pre-copy migration changed from another
// thread (cancel, bandwidth, downtime), with the fake source VM of
// fake_source.h. The early switch to post-copy is in postcopy_test (it
// needs userfaultfd).
#include "migration/migration_control.h"

#include <catch2/catch.hpp>
#include <thread>

#include "libs/migration/src/fake_source.h"

using namespace migration;
using namespace migration::testing;

namespace {

// Round 0 sends the fake guest's 512 written pages (2 MiB): 8 s at this cap.
constexpr uint64_t kSlow = 256 << 10;

struct Run {
  explicit Run(uint64_t dirty_pages_per_ms = 5) : vm(dirty_pages_per_ms) {}
  FakeVm vm;
  Pair p;
  MigrationControl control;
  MigrationOptions o;
  absl::Status result;
  std::vector<MigrationProgress> seen;
  std::thread src;

  void Start(std::function<void(const MigrationProgress&)> also = nullptr) {
    o.control = &control;
    src = std::thread([this, also] {
      result = Migrate(p.fd[0], vm, o, [&](const MigrationProgress& m) {
        seen.push_back(m);
        if (also) also(m);
      });
    });
  }
};

}  // namespace

TEST_CASE("a cancelled migration ends at once and leaves the source running") {
  Run r;
  r.o.bandwidth_bytes_per_s = kSlow;
  absl::Time t0 = absl::Now();
  r.Start();
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(300));
    CHECK(r.control.Cancel().ok());
  });
  auto ram = ReceiveAll(r.p.fd[1]);
  r.src.join();
  canceller.join();
  REQUIRE(r.result.code() == absl::StatusCode::kCancelled);
  REQUIRE(absl::Now() - t0 < absl::Seconds(4));  // not the 8 s round 0 would take
  REQUIRE_THAT(std::string(ram.status().message()), Catch::Contains("cancelled"));
  REQUIRE_FALSE(r.vm.migrated_);
  REQUIRE(r.vm.stops_ == r.vm.resumes_);
  REQUIRE_FALSE(r.vm.logging_);
  REQUIRE(r.vm.throttle_ == 0);
  // Nothing runs now: a cancel or a post-copy request says so.
  REQUIRE(r.control.Cancel().code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE_THAT(std::string(r.control.StartPostcopy().message()),
               Catch::Contains("no migration is running"));
}

TEST_CASE("a bandwidth cap lifted while migrating takes effect in the round being sent") {
  Run r;
  r.o.bandwidth_bytes_per_s = kSlow;
  r.o.max_downtime = absl::Milliseconds(100);
  absl::Time t0 = absl::Now();
  r.Start();
  std::thread lifter([&] {
    absl::SleepFor(absl::Milliseconds(300));
    r.control.SetBandwidth(0);
  });
  auto ram = ReceiveAll(r.p.fd[1]);
  r.src.join();
  lifter.join();
  INFO(r.result.message());
  REQUIRE(r.result.ok());
  REQUIRE(ram.ok());
  REQUIRE(absl::Now() - t0 < absl::Seconds(5));
  REQUIRE(SameRam(r.vm.memory(), **ram));
  REQUIRE(r.vm.migrated_);
}

TEST_CASE("a downtime limit raised while migrating lets pre-copy converge") {
  Run r(40);
  r.o.bandwidth_bytes_per_s = 64 << 20;
  r.o.max_downtime = absl::Milliseconds(5);
  r.o.max_rounds = 30;
  // As migration_test's "plain pre-copy gives up": every round finds 200
  // written pages, more than 5 ms of the link, until round 2 raises the
  // limit to a second.
  r.Start([&](const MigrationProgress& m) {
    if (m.phase != "precopy") return;
    CHECK(r.vm.WaitForWrites(200));
    if (m.round == 2) r.control.SetMaxDowntime(absl::Seconds(1));
  });
  auto ram = ReceiveAll(r.p.fd[1]);
  r.src.join();
  INFO(r.result.message());
  REQUIRE(r.result.ok());
  REQUIRE(ram.ok());
  REQUIRE(SameRam(r.vm.memory(), **ram));
  REQUIRE(r.seen.back().phase == "done");
  REQUIRE(r.seen.back().round == 3);  // the round after the change switched over
}

TEST_CASE("an early post-copy is refused in a pre-copy migration") {
  Run r;
  r.o.bandwidth_bytes_per_s = kSlow;
  r.Start();
  std::thread asker([&] {
    absl::SleepFor(absl::Milliseconds(200));
    absl::Status s = r.control.StartPostcopy();
    CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(s.message()), Catch::Contains("not a post-copy"));
    CHECK(r.control.Cancel().ok());
  });
  auto ram = ReceiveAll(r.p.fd[1]);
  r.src.join();
  asker.join();
  REQUIRE(r.result.code() == absl::StatusCode::kCancelled);
  REQUIRE_FALSE(r.vm.migrated_);
}
