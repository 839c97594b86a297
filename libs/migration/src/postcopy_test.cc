// Post-copy end to end without KVM: the fake source VM of fake_source.h,
// a destination whose RAM is paged in by PostcopyPager. Its own target,
// run outside Bazel's sandbox: userfaultfd with kernel-mode faults needs
// privileges a sandboxed (user-namespaced) test does not have.
#include "migration/postcopy.h"

#include <bit>
#include <catch2/catch.hpp>
#include <thread>

#include "absl/synchronization/notification.h"
#include "kindling/test_skip.h"
#include "libs/migration/src/fake_source.h"

using namespace migration;
using namespace migration::testing;

namespace {

// Pages the guest writes after round 0, before the switch: far more than
// the push's first frame (64 pages), so the last of them is seconds away
// at the tests' push rates and a read of it must ask.
constexpr uint64_t kDirtyAtSwitch = 256;

struct Destination {
  std::unique_ptr<vm_memory::GuestMemory> ram = Ram();
  PageBitmap missing;
  std::unique_ptr<PostcopyPager> pager;
  absl::Notification failed;
  std::string failure;
};

// Everything up to the pager's start; SKIPs where userfaultfd is missing.
void ReceiveUntilPostcopy(FrameStream& s, Destination& d) {
  REQUIRE(ReceiveHello(s, absl::Now() + absl::Seconds(5)).ok());
  auto in = ReceiveMemoryAndState(s, *d.ram, absl::Seconds(10));
  INFO(in.status().message());
  REQUIRE(in.ok());
  REQUIRE(in->postcopy.has_value());
  d.missing = *in->postcopy;
  auto pager = PostcopyPager::Start(*d.ram, s.fd(), *std::move(in->postcopy), absl::Seconds(10),
                                    [&d](const absl::Status& why) {
                                      d.failure = std::string(why.message());
                                      d.failed.Notify();
                                    });
  if (!pager.ok() && pager.status().code() == absl::StatusCode::kFailedPrecondition) {
    (void)s.SendText(FrameType::kError, std::string(pager.status().message()));
    KINDLING_SKIP(std::string(pager.status().message()));
  }
  INFO(pager.status().message());
  REQUIRE(pager.ok());
  d.pager = *std::move(pager);
}

// The last page `missing` marks, as a guest address: the background push
// goes in address order, so it comes last.
uint64_t LastMissing(const PageBitmap& missing) {
  for (size_t w = missing[0].size(); w-- > 0;) {
    if (missing[0][w]) return (w * 64 + 63 - std::countl_zero(missing[0][w])) * kStreamPage;
  }
  FAIL("no page is missing");
  return 0;
}

}  // namespace

TEST_CASE("post-copy: pages come on demand and in the background, and all arrive intact") {
  FakeVm vm(20);
  Pair p;
  absl::Status result;
  std::vector<MigrationProgress> seen;
  std::thread src([&] {
    MigrationOptions o;
    o.mode = MigrationMode::kPostcopy;
    o.postcopy_after_rounds = 0;
    o.postcopy_bandwidth_bytes_per_s = 256 << 10;  // slow: the read below must ask
    result = Migrate(p.fd[0], vm, o, [&](const MigrationProgress& m) {
      if (seen.empty()) CHECK(vm.WaitForWrites(kDirtyAtSwitch));
      seen.push_back(m);
    });
  });
  Destination d;
  FrameStream s(p.fd[1]);
  ReceiveUntilPostcopy(s, d);
  REQUIRE(d.pager->Finish(absl::Seconds(10)).ok());
  // The guest touches a page it does not have yet: the fault asks for it.
  uint64_t gpa = LastMissing(d.missing);
  REQUIRE(CountPages(d.missing) >= kDirtyAtSwitch);
  std::vector<uint8_t> mine(kStreamPage), theirs(kStreamPage);
  REQUIRE(d.ram->Read(vm_memory::GuestAddress(gpa), mine).ok());
  REQUIRE(vm.memory().Read(vm_memory::GuestAddress(gpa), theirs).ok());
  REQUIRE(mine == theirs);
  REQUIRE(d.pager->stats().requests >= 1);
  REQUIRE(d.pager->WaitComplete(absl::Seconds(60)).ok());
  src.join();
  INFO(result.message());
  REQUIRE(result.ok());
  PostcopyPager::Stats st = d.pager->stats();
  REQUIRE(st.pages_missing == 0);
  REQUIRE(st.pages_placed == CountPages(d.missing));
  REQUIRE(SameRam(vm.memory(), *d.ram));
  REQUIRE(vm.migrated_);
  REQUIRE(vm.resumes_ == 0);
  REQUIRE(seen.back().phase == "done");
  REQUIRE(seen.back().postcopy_left == 0);
  REQUIRE(seen.back().postcopy_requests >= 1);
  REQUIRE_FALSE(d.failed.HasBeenNotified());
}

TEST_CASE("post-copy: a source lost after GO fails the destination, which does not run on") {
  FakeVm vm(20);
  Pair p;
  absl::Status result;
  std::thread src([&] {
    MigrationOptions o;
    o.mode = MigrationMode::kPostcopy;
    o.postcopy_after_rounds = 0;
    o.postcopy_bandwidth_bytes_per_s = 16 << 10;  // far from done when the link goes
    bool waited = false;
    result = Migrate(p.fd[0], vm, o, [&](const MigrationProgress&) {
      if (!waited) CHECK(vm.WaitForWrites(kDirtyAtSwitch));
      waited = true;
    });
  });
  Destination d;
  FrameStream s(p.fd[1]);
  ReceiveUntilPostcopy(s, d);
  REQUIRE(d.pager->Finish(absl::Seconds(10)).ok());
  ::shutdown(p.fd[0], SHUT_RDWR);  // the source's end of the link
  REQUIRE(d.failed.WaitForNotificationWithTimeout(absl::Seconds(20)));
  REQUIRE(d.pager->stats().pages_missing > 0);
  REQUIRE_FALSE(d.pager->WaitComplete(absl::Seconds(1)).ok());
  src.join();
  REQUIRE(SourceStranded(result));
  REQUIRE(vm.resumes_ == 0);
  d.pager.reset();  // keeps the userfaultfd: nothing may read the missing pages now
}

TEST_CASE("post-copy on request: the round being sent stops short and the rest follows") {
  FakeVm vm(5);
  Pair p;
  MigrationControl control;
  absl::Status result, late_cancel;
  bool asked_late = false;
  std::vector<MigrationProgress> seen;
  std::thread src([&] {
    MigrationOptions o;
    o.mode = MigrationMode::kPostcopy;
    o.postcopy_after_rounds = 1000;               // only the request switches
    o.bandwidth_bytes_per_s = 256 << 10;          // round 0 (2 MiB) would take 8 s
    o.postcopy_bandwidth_bytes_per_s = 64 << 20;  // the rest comes fast
    o.control = &control;
    result = Migrate(p.fd[0], vm, o, [&](const MigrationProgress& m) {
      if (m.phase == "postcopy" && !asked_late) {  // after GO
        asked_late = true;
        late_cancel = control.Cancel();
      }
      seen.push_back(m);
    });
  });
  std::thread asker([&] {
    absl::SleepFor(absl::Milliseconds(300));
    CHECK(control.StartPostcopy().ok());
  });
  Destination d;
  FrameStream s(p.fd[1]);
  ReceiveUntilPostcopy(s, d);
  REQUIRE(d.pager->Finish(absl::Seconds(10)).ok());
  REQUIRE(d.pager->WaitComplete(absl::Seconds(30)).ok());
  src.join();
  asker.join();
  INFO(result.message());
  REQUIRE(result.ok());
  REQUIRE(SameRam(vm.memory(), *d.ram));
  REQUIRE(vm.migrated_);
  // Round 0 was cut short: what it had not sent was left to post-copy.
  REQUIRE(seen.front().round == 0);
  REQUIRE(seen.front().pages_sent < 512);
  REQUIRE(CountPages(d.missing) >= 512 - seen.front().pages_sent);
  REQUIRE(late_cancel.code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE_THAT(std::string(late_cancel.message()), Catch::Contains("too late"));
  REQUIRE(control.StartPostcopy().code() == absl::StatusCode::kFailedPrecondition);
}
