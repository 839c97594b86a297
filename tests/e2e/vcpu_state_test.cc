// Saves a running guest's vCPU state, clock and RAM, restores them into a
// new VM, and checks the guest carries on where it was: the ticker guest's
// next tick follows the last one seen, and its final running sum equals an
// uninterrupted run's.
#include <unistd.h>

#include <cstdio>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <chrono>
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

VmConfig TickerConfig(Console& console) {
  VmConfig c;
  const char* elf = std::getenv("KINDLING_TICKER_ELF");
  c.kernel = elf ? elf : "tests/guests/ticker.elf";
  c.memory_mib = 64;
  c.console_output = console.Sink();
  return c;
}

std::string FinalSum(const std::string& out) {
  std::smatch m;
  std::regex re("ticker: tick 20 sum ([0-9a-f]+)");
  return std::regex_search(out, m, re) ? m[1].str() : "";
}

int LastTick(const std::string& out) {
  int last = 0;
  std::regex re("ticker: tick ([0-9]+) ");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re);
       it != std::sregex_iterator(); ++it) {
    last = std::stoi((*it)[1].str());
  }
  return last;
}

}  // namespace

TEST_CASE("A paused guest restored into a new VM carries on") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  // Reference: an uninterrupted run.
  Console ref;
  auto ref_vm = MicroVm::Create(TickerConfig(ref));
  REQUIRE(ref_vm.ok());
  VcpuRunner::Outcome ref_out = (*ref_vm)->Run();
  REQUIRE(ref_out.reason == VcpuRunner::StopReason::kGuestExit);
  REQUIRE(ref_out.exit_code == 0);
  std::string want_sum = FinalSum(ref.Get());
  REQUIRE_FALSE(want_sum.empty());

  // Source: run until tick 3, pause, save.
  Console src_console;
  auto src = MicroVm::Create(TickerConfig(src_console));
  REQUIRE(src.ok());
  std::thread runner([&] { (*src)->Run(); });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (LastTick(src_console.Get()) < 3 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  (*src)->Pause();
  std::string before = src_console.Get();
  int seen = LastTick(before);
  REQUIRE(seen >= 3);
  REQUIRE(seen < 20);
  auto state = (*src)->SaveMachineState();
  REQUIRE(state.ok());
  std::vector<std::vector<uint8_t>> ram;
  for (const auto* r : (*src)->memory().regions()) {
    ram.emplace_back(r->size());
    REQUIRE((*src)->memory().Read(r->start(), ram.back()).ok());
  }
  (*src)->Stop({VcpuRunner::StopReason::kRequested, 0, "saved"});
  runner.join();
  src->reset();

  // Destination: same config, RAM and state restored, then run.
  Console dst_console;
  auto dst = MicroVm::Create(TickerConfig(dst_console));
  REQUIRE(dst.ok());
  auto regions = (*dst)->memory().regions();
  REQUIRE(regions.size() == ram.size());
  for (size_t i = 0; i < ram.size(); ++i) {
    REQUIRE((*dst)->memory().Write(regions[i]->start(), ram[i]).ok());
  }
  REQUIRE((*dst)->RestoreMachineState(*state).ok());
  VcpuRunner::Outcome out = (*dst)->Run();
  std::string after = dst_console.Get();
  INFO("before:\n" << before << "\nafter:\n" << after);
  REQUIRE(out.reason == VcpuRunner::StopReason::kGuestExit);
  REQUIRE(out.exit_code == 0);
  REQUIRE(after.find("ticker: start") == std::string::npos);  // no reboot
  std::smatch m;
  REQUIRE(std::regex_search(after, m, std::regex("ticker: tick ([0-9]+) ")));
  REQUIRE(std::stoi(m[1].str()) == seen + 1);
  REQUIRE(FinalSum(after) == want_sum);
  REQUIRE(after.find("ticker: done") != std::string::npos);
}

namespace {

std::string SnapshotDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name;
}

// Runs the ticker until tick 3, pauses it and saves a snapshot into `dir`;
// returns the last tick seen.
int SnapshotAtTick3(VmConfig config, const std::string& dir) {
  Console console;
  config.console_output = console.Sink();
  auto vm = MicroVm::Create(config);
  REQUIRE(vm.ok());
  std::thread runner([&] { (*vm)->Run(); });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (LastTick(console.Get()) < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  (*vm)->Pause();
  int seen = LastTick(console.Get());
  absl::Status saved = (*vm)->SaveSnapshot(dir);
  INFO(saved.message());
  REQUIRE(saved.ok());
  (*vm)->Stop({VcpuRunner::StopReason::kRequested, 0, "saved"});
  runner.join();
  return seen;
}

}  // namespace

TEST_CASE("A guest saved to a snapshot directory resumes from it, on both irqchips") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  Console ref;
  auto ref_vm = MicroVm::Create(TickerConfig(ref));
  REQUIRE(ref_vm.ok());
  REQUIRE((*ref_vm)->Run().exit_code == 0);
  std::string want_sum = FinalSum(ref.Get());
  REQUIRE_FALSE(want_sum.empty());

  struct Case {
    const char* name;
    vcpu::IrqchipMode irqchip;
    migration::RestoreMode restore;
    int restores;  // lazy: twice from one file, as clones are
  };
  for (const Case& c : {Case{"split, eager", vcpu::IrqchipMode::kSplit,
                             migration::RestoreMode::kEager, 1},
                        Case{"full, eager", vcpu::IrqchipMode::kFull,
                             migration::RestoreMode::kEager, 1},
                        Case{"split, lazy", vcpu::IrqchipMode::kSplit,
                             migration::RestoreMode::kLazy, 2},
                        Case{"full, uffd", vcpu::IrqchipMode::kFull,
                             migration::RestoreMode::kUffd, 1}}) {
    DYNAMIC_SECTION(c.name) {
      Console unused;
      VmConfig config = TickerConfig(unused);
      config.irqchip = c.irqchip;
      std::string dir = SnapshotDir(std::string("snap_") + std::to_string(c.restores) +
                                    (c.irqchip == vcpu::IrqchipMode::kSplit ? "s" : "f") +
                                    std::to_string(static_cast<int>(c.restore)));
      int seen = SnapshotAtTick3(config, dir);
      REQUIRE(seen >= 3);
      REQUIRE(seen < 20);
      for (int i = 0; i < c.restores; ++i) {
        // Restore with nothing but the host side: no kernel, default shape.
        Console console;
        VmConfig host;
        host.console_output = console.Sink();
        auto vm = MicroVm::Restore(host, dir, c.restore);
        INFO(vm.status().message());
        REQUIRE(vm.ok());
        VcpuRunner::Outcome out = (*vm)->Run();
        std::string after = console.Get();
        INFO("restore " << i << ", after:\n" << after);
        REQUIRE(out.reason == VcpuRunner::StopReason::kGuestExit);
        REQUIRE(out.exit_code == 0);
        REQUIRE(after.find("ticker: start") == std::string::npos);
        std::smatch m;
        REQUIRE(std::regex_search(after, m, std::regex("ticker: tick ([0-9]+) ")));
        REQUIRE(std::stoi(m[1].str()) == seen + 1);
        REQUIRE(FinalSum(after) == want_sum);
      }
    }
  }
}

TEST_CASE("A damaged snapshot is refused with what is wrong") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  Console unused;
  std::string dir = SnapshotDir("snap_damaged");
  SnapshotAtTick3(TickerConfig(unused), dir);
  // Flip a byte of guest RAM the ticker has written (its code page).
  std::string mem = dir + "/memory";
  FILE* f = std::fopen(mem.c_str(), "r+b");
  REQUIRE(f != nullptr);
  off_t data = ::lseek(fileno(f), 0, SEEK_DATA);
  REQUIRE(data >= 0);
  uint8_t b = 0;
  REQUIRE(::pread(fileno(f), &b, 1, data) == 1);
  b ^= 0xff;
  REQUIRE(::pwrite(fileno(f), &b, 1, data) == 1);
  std::fclose(f);
  VmConfig host;
  host.console_output = unused.Sink();
  auto vm = MicroVm::Restore(host, dir);
  REQUIRE(vm.status().code() == absl::StatusCode::kDataLoss);
  CHECK(std::string(vm.status().message()).find("fails its checksum") != std::string::npos);

  vm = MicroVm::Restore(host, SnapshotDir("no_such_snapshot"));
  REQUIRE(vm.status().code() == absl::StatusCode::kNotFound);

}

namespace {

// The state probe on a 4 MiB scratch disk with virtio-rng beside it.
VmConfig ProbeConfig(kindling::VirtioTransport transport, const std::string& disk) {
  VmConfig c;
  const char* elf = std::getenv("KINDLING_PROBE_ELF");
  c.kernel = elf ? elf : "tests/guests/state_probe.elf";
  c.cmdline = "probe.mib=4 probe.rounds=24 probe.verify=4";
  c.memory_mib = 64;
  c.virtio.transport = transport;
  c.virtio.rng = true;
  FILE* f = std::fopen(disk.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(::ftruncate(fileno(f), 4 << 20) == 0);
  std::fclose(f);
  c.virtio.disks.push_back({disk, false, "raw"});
  return c;
}

int LastRound(const std::string& out) {
  int last = -1;
  std::regex re("probe: round ([0-9]+) ");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re);
       it != std::sregex_iterator(); ++it) {
    last = std::stoi((*it)[1].str());
  }
  return last;
}

}  // namespace

TEST_CASE("A guest using virtio-blk and virtio-rng resumes with its devices, mmio and pci") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  struct Case {
    const char* name;
    kindling::VirtioTransport transport;
    migration::RestoreMode restore;
  };
  for (const Case& c : {Case{"mmio, eager", kindling::VirtioTransport::kMmio,
                             migration::RestoreMode::kEager},
                        Case{"pci, lazy", kindling::VirtioTransport::kPci,
                             migration::RestoreMode::kLazy},
                        Case{"pci, uffd", kindling::VirtioTransport::kPci,
                             migration::RestoreMode::kUffd}}) {
    DYNAMIC_SECTION(c.name) {
      std::string tag = std::string(c.transport == kindling::VirtioTransport::kPci ? "pci" : "mmio") +
                        std::to_string(static_cast<int>(c.restore));
      std::string dir = SnapshotDir("snap_probe_" + tag);
      Console console;
      VmConfig config = ProbeConfig(c.transport, SnapshotDir("probe_" + tag + ".img"));
      config.console_output = console.Sink();
      auto vm = MicroVm::Create(config);
      REQUIRE(vm.ok());
      std::thread runner([&] { (*vm)->Run(); });
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
      while (LastRound(console.Get()) < 5 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      (*vm)->Pause();
      int seen = LastRound(console.Get());
      absl::Status saved = (*vm)->SaveSnapshot(dir);
      (*vm)->Stop({VcpuRunner::StopReason::kRequested, 0, "saved"});
      runner.join();
      INFO(saved.message() << "\nbefore:\n" << console.Get());
      REQUIRE(saved.ok());
      REQUIRE(seen >= 5);
      REQUIRE(seen < 23);

      Console after;
      VmConfig host;
      host.console_output = after.Sink();
      auto restored = MicroVm::Restore(host, dir, c.restore);
      INFO(restored.status().message());
      REQUIRE(restored.ok());
      VcpuRunner::Outcome out = (*restored)->Run();
      std::string text = after.Get();
      INFO("after:\n" << text);
      REQUIRE(out.reason == VcpuRunner::StopReason::kGuestExit);
      REQUIRE(out.exit_code == 0);
      REQUIRE(text.find("probe: start") == std::string::npos);
      REQUIRE(text.find("FAIL") == std::string::npos);
      std::smatch m;
      // The snapshot may cut a line: "p" before, "robe: round 6 ..." after.
      REQUIRE(std::regex_search(text, m, std::regex("round ([0-9]+) ")));
      REQUIRE(std::stoi(m[1].str()) == seen + 1);
      REQUIRE(text.find("probe: done pages 1024 blk 46 rng 24") != std::string::npos);
    }
  }
}

TEST_CASE("A VM with userspace vsock is saved and restored (its connections reset)") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  Console unused;
  VmConfig with_vsock = TickerConfig(unused);
  // A unix socket path is at most 107 bytes; TEST_TMPDIR can be longer.
  char short_dir[] = "/tmp/kindling-vsock.XXXXXX";
  REQUIRE(::mkdtemp(short_dir) != nullptr);
  std::string sock = std::string(short_dir) + "/v.sock";
  with_vsock.virtio.vsock = kindling::VsockConfig{3, sock};
  std::string dir = SnapshotDir("snap_vsock");
  int seen = SnapshotAtTick3(with_vsock, dir);
  Console console;
  VmConfig host;
  host.console_output = console.Sink();
  auto vm = MicroVm::Restore(host, dir);
  INFO(vm.status().message());
  REQUIRE(vm.ok());
  VcpuRunner::Outcome out = (*vm)->Run();
  INFO(console.Get());
  REQUIRE(out.exit_code == 0);
  std::smatch m;
  std::string after = console.Get();
  REQUIRE(std::regex_search(after, m, std::regex("ticker: tick ([0-9]+) ")));
  REQUIRE(std::stoi(m[1].str()) == seen + 1);
  REQUIRE(::access(sock.c_str(), F_OK) == 0);  // listening again
  std::filesystem::remove_all(short_dir);
}
