// Live migration between two kindling VMs in one process, over a
// socketpair: the state probe (dirtying pages with checksums, a disk ring,
// virtio-rng) carries on on the destination with the next round and every
// checksum intact; auto-converge throttles a guest that outruns a capped
// link; a destination that vanishes leaves the source running to the end.
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "kindling/test_skip.h"
#include "launcher/microvm.h"
#include "tests/e2e/console.h"

using kindling::MicroVm;
using kindling::VmConfig;
using kindling::testing::Console;
using vcpu::VcpuRunner;

namespace {

std::string Tmp(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name;
}

VmConfig ProbeConfig(const std::string& disk, const std::string& args) {
  VmConfig c;
  const char* elf = std::getenv("KINDLING_PROBE_ELF");
  c.kernel = elf ? elf : "tests/guests/state_probe.elf";
  c.cmdline = args;
  c.memory_mib = 64;
  c.virtio.rng = true;
  FILE* f = std::fopen(disk.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(::ftruncate(fileno(f), 4 << 20) == 0);
  std::fclose(f);
  c.virtio.disks.push_back({disk, false, "raw"});
  return c;
}

std::vector<int> Rounds(const std::string& out) {
  std::vector<int> r;
  std::regex re("probe: round ([0-9]+) ");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re);
       it != std::sregex_iterator(); ++it) {
    r.push_back(std::stoi((*it)[1].str()));
  }
  return r;
}

// Whether the guest printed round `round` within two minutes.
bool WaitForRound(Console& c, int round) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (;;) {
    std::vector<int> r = Rounds(c.Get());
    if (!r.empty() && r.back() >= round) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

struct Migrated {
  absl::Status source;
  VcpuRunner::Outcome source_outcome;
  std::string source_text, dest_text;
  VcpuRunner::Outcome dest_outcome;
  std::vector<::migration::MigrationProgress> progress;
  ::migration::PostcopyPager::Stats postcopy;  // the destination's, once all came
};

// Runs `config` until round 2, migrates it, and runs the destination to
// its end (or, with `rounds_after` > 0, for that many more rounds). The
// destination runs as soon as it has the guest: a post-copy source is
// still sending then. With `dirty_after_round0`, the source waits after
// round 0 until the guest has finished a whole round begun after it, so
// the next round (or a post-copy switch) finds pages dirty even on a host
// too busy to run the guest while round 0 was sent.
Migrated Migrate(const VmConfig& config, const ::migration::MigrationOptions& o,
                 int rounds_after = 0, bool dirty_after_round0 = false) {
  Migrated m;
  Console src_console, dst_console;
  VmConfig c = config;
  c.console_output = src_console.Sink();
  auto src = MicroVm::Create(c);
  REQUIRE(src.ok());
  std::thread runner([&] { m.source_outcome = (*src)->Run(); });
  if (!WaitForRound(src_console, 2)) {
    (*src)->Stop({VcpuRunner::StopReason::kRequested, 0, "test over"});
    runner.join();
    FAIL("the source guest did not reach round 2 in 120 s:\n" << src_console.Get());
  }
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  absl::StatusOr<std::unique_ptr<MicroVm>> dst = absl::UnknownError("not yet");
  absl::Mutex dst_mu;  // dst is set by the receiver, read here before the join
  std::thread receiver([&, conn = vm_memory::UniqueFd(fds[1])]() mutable {
    VmConfig host;
    host.console_output = dst_console.Sink();
    auto vm = MicroVm::Incoming(host, std::move(conn));
    MicroVm* running = nullptr;
    {
      absl::MutexLock l(&dst_mu);
      dst = std::move(vm);
      if (dst.ok()) running = dst->get();
    }
    if (running) m.dest_outcome = running->Run();
  });
  m.source = (*src)->MigrateTo(fds[0], o, [&](const ::migration::MigrationProgress& p) {
    if (dirty_after_round0 && m.progress.empty()) {
      CHECK(WaitForRound(src_console, Rounds(src_console.Get()).back() + 2));
    }
    m.progress.push_back(p);
  });
  if (m.source.ok() && rounds_after > 0) {
    int from = Rounds(src_console.Get()).back();  // at least round 2
    bool carried_on = WaitForRound(dst_console, from + rounds_after);
    // Stop it either way, or the join below waits for a guest that runs forever.
    absl::MutexLock l(&dst_mu);
    if (dst.ok()) (*dst)->Stop({VcpuRunner::StopReason::kRequested, 0, "test over"});
    CHECK(carried_on);
  }
  receiver.join();
  ::close(fds[0]);
  if (m.source.ok()) {
    INFO(dst.status().message());
    REQUIRE(dst.ok());
    REQUIRE((*dst)->WaitPostcopy(absl::Seconds(60)).ok());
    if ((*dst)->postcopy()) m.postcopy = (*dst)->postcopy()->stats();
  }
  runner.join();
  m.source_text = src_console.Get();
  m.dest_text = dst_console.Get();
  return m;
}

// The console is one byte stream across the move (a line may start on the
// source and end on the destination): its rounds must follow each other
// with none lost or repeated, and the destination must have run some.
void RequireConsecutive(const Migrated& m) {
  std::vector<int> all = Rounds(m.source_text + m.dest_text);
  REQUIRE(all.size() > Rounds(m.source_text).size());
  for (size_t i = 1; i < all.size(); ++i) REQUIRE(all[i] == all[i - 1] + 1);
}

void RequireCarriedOn(const Migrated& m) {
  INFO(m.source.message() << "\nsource:\n" << m.source_text << "\ndestination:\n" << m.dest_text);
  REQUIRE(m.source.ok());
  REQUIRE(m.source_outcome.reason == VcpuRunner::StopReason::kRequested);
  REQUIRE(m.dest_outcome.reason == VcpuRunner::StopReason::kGuestExit);
  REQUIRE(m.dest_outcome.exit_code == 0);
  RequireConsecutive(m);
  REQUIRE(m.dest_text.find("probe: start") == std::string::npos);
  REQUIRE(m.dest_text.find("FAIL") == std::string::npos);
  REQUIRE(std::regex_search(m.dest_text, std::regex("probe: done pages 1024 blk [0-9]+ rng")));
}

}  // namespace

TEST_CASE("Pre-copy moves a running guest with its disk and rng") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  VmConfig c = ProbeConfig(Tmp("mig_precopy.img"), "probe.mib=4 probe.rounds=30 probe.verify=4");
  Migrated m = Migrate(c, ::migration::MigrationOptions());
  RequireCarriedOn(m);
  REQUIRE(m.progress.back().phase == "done");
  // Round 0 skips zero pages: the guest's image and what it has touched.
  REQUIRE(m.progress.front().pages_sent >= 64);
  // Later rounds may find nothing dirty when round 0 took a millisecond and
  // the guest was not scheduled meanwhile (a loaded host); that every page
  // the guest wrote arrived is what RequireCarriedOn's verification checks,
  // and the auto-converge case shows rounds of dirtied pages.
  REQUIRE(m.progress.back().pages_sent >= m.progress.front().pages_sent);
  std::printf("precopy: %zu rounds, %lu pages, downtime %s\n", m.progress.size(),
              m.progress.back().pages_sent,
              absl::FormatDuration(m.progress.back().downtime).c_str());
}

TEST_CASE("Auto-converge throttles a guest that outruns a capped link") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  VmConfig c = ProbeConfig(Tmp("mig_ac.img"),
                           "probe.mib=8 probe.dirty=2048 probe.rounds=0 probe.verify=16");
  ::migration::MigrationOptions o;
  o.mode = ::migration::MigrationMode::kAutoConverge;
  o.bandwidth_bytes_per_s = 8 << 20;
  o.max_downtime = absl::Milliseconds(20);
  Migrated m = Migrate(c, o, /*rounds_after=*/3);
  INFO(m.source.message() << "\nsource:\n" << m.source_text << "\ndestination:\n"
                          << m.dest_text);
  REQUIRE(m.source.ok());
  REQUIRE(m.dest_text.find("FAIL") == std::string::npos);
  RequireConsecutive(m);
  int most = 0;
  for (const auto& p : m.progress) most = std::max(most, p.throttle_percent);
  REQUIRE(most >= 20);
  std::printf("auto-converge: %zu rounds, throttle up to %d%%, downtime %s\n",
              m.progress.size(), most,
              absl::FormatDuration(m.progress.back().downtime).c_str());
}

TEST_CASE("Post-copy runs the guest there first and brings its dirtied pages on demand") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  VmConfig c = ProbeConfig(Tmp("mig_postcopy.img"), "probe.mib=4 probe.rounds=30 probe.verify=2");
  ::migration::MigrationOptions o;
  o.mode = ::migration::MigrationMode::kPostcopy;
  o.postcopy_after_rounds = 0;  // switch right after round 0: much is still dirty
  // A slow background push: the guest, verifying its area every other
  // round, faults on pages before the push brings them.
  o.postcopy_bandwidth_bytes_per_s = 128 << 10;
  Migrated m = Migrate(c, o, /*rounds_after=*/0, /*dirty_after_round0=*/true);
  RequireCarriedOn(m);
  bool switched = false;
  for (const auto& p : m.progress) switched |= p.phase == "postcopy";
  REQUIRE(switched);
  REQUIRE(m.progress.back().phase == "done");
  REQUIRE(m.progress.back().postcopy_left == 0);
  REQUIRE(m.postcopy.pages_missing == 0);
  REQUIRE(m.postcopy.requests > 0);
  REQUIRE(m.postcopy.pages_placed > 0);
  std::printf("postcopy: %lu pages placed, %lu faults, %lu asked for, downtime %s\n",
              m.postcopy.pages_placed, m.postcopy.faults, m.postcopy.requests,
              absl::FormatDuration(m.progress.back().downtime).c_str());
}

TEST_CASE("A destination that goes away leaves the source running to the end") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  Console console;
  VmConfig c = ProbeConfig(Tmp("mig_cut.img"), "probe.mib=4 probe.rounds=20 probe.verify=4");
  c.console_output = console.Sink();
  auto src = MicroVm::Create(c);
  REQUIRE(src.ok());
  VcpuRunner::Outcome out;
  std::thread runner([&] { out = (*src)->Run(); });
  REQUIRE(WaitForRound(console, 2));
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  std::thread cutter([&] {
    ::migration::FrameStream s(fds[1]);
    (void)::migration::ReceiveHello(s, absl::Now() + absl::Seconds(30));
    (void)s.Send(::migration::FrameType::kReady, {});
    (void)s.Receive(absl::Now() + absl::Seconds(30));
    ::shutdown(fds[1], SHUT_RDWR);
  });
  absl::Status s = (*src)->MigrateTo(fds[0], ::migration::MigrationOptions(), nullptr);
  cutter.join();
  runner.join();
  ::close(fds[0]);
  ::close(fds[1]);
  INFO(console.Get());
  REQUIRE_FALSE(s.ok());
  REQUIRE(out.reason == VcpuRunner::StopReason::kGuestExit);
  REQUIRE(out.exit_code == 0);
  REQUIRE(console.Get().find("probe: done") != std::string::npos);
}
