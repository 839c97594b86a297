// Saves a running guest's vCPU state, clock and RAM, restores them into a
// new VM, and checks the guest carries on where it was: the ticker guest's
// next tick follows the last one seen, and its final running sum equals an
// uninterrupted run's.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <chrono>
#include <regex>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "kindling/test_skip.h"
#include "launcher/microvm.h"

using kindling::MicroVm;
using kindling::VmConfig;
using vcpu::VcpuRunner;

namespace {

struct Console {
  absl::Mutex mu;
  std::string text;
  std::function<void(uint8_t)> Sink() {
    return [this](uint8_t b) {
      absl::MutexLock lock(&mu);
      text.push_back(static_cast<char>(b));
    };
  }
  std::string Get() {
    absl::MutexLock lock(&mu);
    return text;
  }
};

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
