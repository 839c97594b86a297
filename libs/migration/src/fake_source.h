// A fake source VM for libs/migration's tests: its "guest" is a thread
// writing RAM through GuestMemory (so its pages land in the VMM dirty
// bitmap that TakeDirty returns). Shared by precopy_test and postcopy_test.
#ifndef MIGRATION_SRC_FAKE_SOURCE_H_
#define MIGRATION_SRC_FAKE_SOURCE_H_

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "migration/precopy.h"

namespace migration::testing {

constexpr uint64_t kRam = 16 << 20;

inline std::unique_ptr<vm_memory::GuestMemory> Ram() {
  vm_memory::RegionSpec spec{vm_memory::GuestAddress(0), kRam};
  return std::move(*vm_memory::GuestMemory::Create({&spec, 1}));
}

class FakeVm : public MigrationSource {
 public:
  explicit FakeVm(uint64_t dirty_pages_per_ms) : mem_(Ram()), rate_(dirty_pages_per_ms) {
    machine_.set_vcpus(1);
    machine_.set_irqchip(v1::IRQCHIP_MODE_SPLIT);
    v1::MemoryRegion* r = machine_.add_regions();
    r->set_size(kRam);
    // Some data before the migration starts, and pages that become zero.
    for (uint64_t p = 0; p < 512; ++p) Touch(p, p + 1);
    guest_ = std::thread([this] { Guest(); });
  }
  ~FakeVm() override {
    quit_ = true;
    running_ = false;
    guest_.join();
  }

  vm_memory::GuestMemory& memory() override { return *mem_; }
  const v1::Machine& machine() const override { return machine_; }
  absl::Status StartDirtyLog() override {
    for (auto* r : mem_->regions()) r->dirty_bitmap().TakeAndClear();
    logging_ = true;
    return absl::OkStatus();
  }
  void StopDirtyLog() override { logging_ = false; }
  absl::StatusOr<std::vector<std::vector<uint64_t>>> TakeDirty() override {
    std::vector<std::vector<uint64_t>> out;
    for (auto* r : mem_->regions()) out.push_back(r->dirty_bitmap().TakeAndClear());
    return out;
  }
  void SetThrottle(int percent) override {
    throttle_ = percent;
    max_throttle_ = std::max(max_throttle_.load(), percent);
  }
  absl::Status Stop() override {
    running_ = false;
    while (in_guest_) std::this_thread::yield();
    ++stops_;
    return absl::OkStatus();
  }
  absl::StatusOr<v1::Snapshot> DescribeMachine() override { return CaptureState(); }
  absl::StatusOr<v1::Snapshot> CaptureState() override {
    v1::Snapshot s;
    *s.mutable_machine() = machine_;
    s.add_vcpus();
    s.mutable_irqchip()->mutable_ioapic();
    s.set_producer("fake");
    return s;
  }
  void Resume() override {
    ++resumes_;
    running_ = true;
  }
  void Migrated() override { migrated_ = true; }

  // Waits (at most 20 s) until the guest has written `pages` more pages,
  // all distinct: a test's progress callback calls it after round 0, so a
  // post-copy switch finds that many dirty pages even on a host too busy
  // to run the guest thread while round 0 was sent.
  bool WaitForWrites(uint64_t pages) {
    const uint64_t until = writes_ + pages;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (writes_ < until) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
  }

  std::atomic<int> stops_{0}, resumes_{0}, throttle_{0}, max_throttle_{0};
  std::atomic<bool> migrated_{false}, logging_{false};

 private:
  void Touch(uint64_t page, uint64_t value) {
    uint64_t gpa = (page % (kRam / 4096)) * 4096;
    if (!mem_->Write(vm_memory::GuestAddress(gpa + 8 * (value % 512)),
                     {reinterpret_cast<const uint8_t*>(&value), 8})
             .ok()) {
      std::abort();
    }
  }
  void Guest() {
    uint64_t n = 0;
    while (!quit_) {
      in_guest_ = running_.load();
      if (!in_guest_) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        continue;
      }
      for (uint64_t i = 0; i < rate_; ++i, ++n) Touch(n * 7919, n);
      writes_ = n;
      in_guest_ = false;
      int t = throttle_;
      std::this_thread::sleep_for(std::chrono::microseconds(1000 + t * 1000 / (100 - t)));
    }
  }

  std::unique_ptr<vm_memory::GuestMemory> mem_;
  v1::Machine machine_;
  uint64_t rate_;
  std::atomic<bool> running_{true}, quit_{false}, in_guest_{false};
  std::atomic<uint64_t> writes_{0};  // pages written by Guest(): n * 7919 is
                                     // a new page for 4096 writes in a row
  std::thread guest_;
};

struct Pair {
  Pair() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) == 0); }
  ~Pair() {
    ::close(fd[0]);
    ::close(fd[1]);
  }
  int fd[2];
};

inline bool SameRam(vm_memory::GuestMemory& a, vm_memory::GuestMemory& b) {
  std::vector<uint8_t> x(kRam), y(kRam);
  REQUIRE(a.Read(vm_memory::GuestAddress(0), x).ok());
  REQUIRE(b.Read(vm_memory::GuestAddress(0), y).ok());
  return x == y;
}

// A pre-copy destination's whole side; returns its RAM once GO came.
inline absl::StatusOr<std::unique_ptr<vm_memory::GuestMemory>> ReceiveAll(int fd) {
  FrameStream s(fd);
  absl::StatusOr<v1::MigrationHello> hello = ReceiveHello(s, absl::Now() + absl::Seconds(10));
  if (!hello.ok()) return hello.status();
  auto ram = Ram();
  absl::StatusOr<IncomingState> st = ReceiveMemoryAndState(s, *ram, absl::Seconds(10));
  if (!st.ok()) return st.status();
  absl::Status done = FinishIncoming(s, absl::Seconds(10));
  if (!done.ok()) return done;
  return ram;
}

}  // namespace migration::testing

#endif  // MIGRATION_SRC_FAKE_SOURCE_H_
