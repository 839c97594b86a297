// Live migration's protocol end to end without KVM: a fake source VM whose
// "guest" is a thread writing RAM through GuestMemory (so its pages land in
// the VMM dirty bitmap that TakeDirty returns), a destination loading into
// its own GuestMemory, over a socketpair.
#include "migration/precopy.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <thread>

#include "migration/address.h"
#include "migration/snapshot.h"

using namespace migration;

namespace {

constexpr uint64_t kRam = 16 << 20;

std::unique_ptr<vm_memory::GuestMemory> Ram() {
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
      in_guest_ = false;
      int t = throttle_;
      std::this_thread::sleep_for(std::chrono::microseconds(1000 + t * 1000 / (100 - t)));
    }
  }

  std::unique_ptr<vm_memory::GuestMemory> mem_;
  v1::Machine machine_;
  uint64_t rate_;
  std::atomic<bool> running_{true}, quit_{false}, in_guest_{false};
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

// The destination's whole side; returns its RAM once GO came.
absl::StatusOr<std::unique_ptr<vm_memory::GuestMemory>> Receive(int fd) {
  FrameStream s(fd);
  absl::StatusOr<v1::MigrationHello> hello = ReceiveHello(s, absl::Now() + absl::Seconds(10));
  if (!hello.ok()) return hello.status();
  auto ram = Ram();
  absl::StatusOr<v1::Snapshot> st = ReceiveMemoryAndState(s, *ram, absl::Seconds(10));
  if (!st.ok()) return st.status();
  absl::Status done = FinishIncoming(s, absl::Seconds(10));
  if (!done.ok()) return done;
  return ram;
}

bool SameRam(vm_memory::GuestMemory& a, vm_memory::GuestMemory& b) {
  std::vector<uint8_t> x(kRam), y(kRam);
  REQUIRE(a.Read(vm_memory::GuestAddress(0), x).ok());
  REQUIRE(b.Read(vm_memory::GuestAddress(0), y).ok());
  return x == y;
}

}  // namespace

TEST_CASE("pre-copy: a guest that keeps writing arrives with every page") {
  FakeVm vm(20);
  Pair p;
  std::vector<MigrationProgress> seen;
  absl::Status result;
  std::thread src([&] {
    MigrationOptions o;
    o.max_downtime = absl::Milliseconds(50);
    result = Migrate(p.fd[0], vm, o, [&](const MigrationProgress& m) { seen.push_back(m); });
  });
  auto ram = Receive(p.fd[1]);
  src.join();
  INFO(result.message());
  REQUIRE(result.ok());
  REQUIRE(ram.ok());
  REQUIRE(vm.migrated_);
  REQUIRE(vm.stops_ == 1);
  REQUIRE(vm.resumes_ == 0);
  REQUIRE_FALSE(vm.logging_);
  REQUIRE(SameRam(vm.memory(), **ram));
  REQUIRE(seen.size() >= 2);
  REQUIRE(seen.back().phase == "done");
  REQUIRE(seen.front().pages_sent >= 512);
}

TEST_CASE("auto-converge throttles a guest that outruns the link; plain pre-copy gives up") {
  SECTION("plain pre-copy: the source carries on") {
    FakeVm vm(40);
    Pair p;
    absl::Status result;
    std::thread src([&] {
      MigrationOptions o;
      o.bandwidth_bytes_per_s = 64 << 20;
      o.max_downtime = absl::Milliseconds(5);
      o.max_rounds = 4;
      result = Migrate(p.fd[0], vm, o, nullptr);
    });
    auto ram = Receive(p.fd[1]);
    src.join();
    REQUIRE(result.code() == absl::StatusCode::kDeadlineExceeded);
    REQUIRE_THAT(std::string(result.message()), Catch::Contains("did not converge after 4 rounds"));
    REQUIRE_THAT(std::string(ram.status().message()), Catch::Contains("the source gave up"));
    REQUIRE_FALSE(vm.migrated_);
    REQUIRE(vm.stops_ == 0);
    REQUIRE_FALSE(vm.logging_);
  }
  SECTION("auto-converge: throttled until it fits") {
    FakeVm vm(40);
    Pair p;
    absl::Status result;
    std::vector<int> throttles;
    std::thread src([&] {
      MigrationOptions o;
      o.mode = MigrationMode::kAutoConverge;
      o.bandwidth_bytes_per_s = 64 << 20;
      o.max_downtime = absl::Milliseconds(5);
      o.max_rounds = 10;
      result = Migrate(p.fd[0], vm, o, [&](const MigrationProgress& m) {
        throttles.push_back(m.throttle_percent);
      });
    });
    auto ram = Receive(p.fd[1]);
    src.join();
    INFO(result.message());
    REQUIRE(result.ok());
    REQUIRE(ram.ok());
    REQUIRE(vm.max_throttle_ >= 20);
    REQUIRE(vm.throttle_ == 0);  // released at the end
    REQUIRE(SameRam(vm.memory(), **ram));
  }
}

TEST_CASE("a destination that goes away leaves the source running") {
  FakeVm vm(20);
  Pair p;
  absl::Status result;
  std::thread src([&] { result = Migrate(p.fd[0], vm, MigrationOptions(), nullptr); });
  {
    FrameStream s(p.fd[1]);
    REQUIRE(ReceiveHello(s, absl::Now() + absl::Seconds(5)).ok());
    REQUIRE(s.Send(FrameType::kReady, {}).ok());
    REQUIRE(s.Receive(absl::Now() + absl::Seconds(5)).ok());  // a first page
    ::shutdown(p.fd[1], SHUT_RDWR);
  }
  src.join();
  REQUIRE_FALSE(result.ok());
  REQUIRE_FALSE(vm.migrated_);
  REQUIRE(vm.stops_ == vm.resumes_);
  REQUIRE_FALSE(vm.logging_);
}

TEST_CASE("a destination refuses a hostile stream, naming what is wrong") {
  auto send_then_receive = [](auto&& send) {
    Pair p;
    FrameStream src(p.fd[0]);
    send(src);
    FrameStream dst(p.fd[1]);
    auto hello = ReceiveHello(dst, absl::Now() + absl::Seconds(2));
    if (!hello.ok()) return std::string(hello.status().message());
    auto ram = Ram();
    auto st = ReceiveMemoryAndState(dst, *ram, absl::Seconds(2));
    return std::string(st.status().message());
  };
  auto hello = [](FrameStream& s, uint32_t version = kStreamVersion, uint64_t ram = kRam) {
    v1::MigrationHello h;
    h.set_stream_version(version);
    h.mutable_machine()->set_vcpus(1);
    h.mutable_machine()->add_regions()->set_size(kRam);
    h.set_ram_bytes(ram);
    v1::Snapshot* sk = h.mutable_skeleton();
    sk->set_format_version(1);
    *sk->mutable_machine() = h.machine();
    sk->add_vcpus();
    sk->mutable_irqchip()->mutable_kernel();
    sk->mutable_machine()->set_irqchip(v1::IRQCHIP_MODE_FULL);
    h.mutable_machine()->set_irqchip(v1::IRQCHIP_MODE_FULL);
    std::string b = h.SerializeAsString();
    REQUIRE(s.Send(FrameType::kHello, {reinterpret_cast<const uint8_t*>(b.data()), b.size()}).ok());
  };
  REQUIRE_THAT(send_then_receive([&](FrameStream& s) { hello(s, 9); }),
               Catch::Contains("stream version 9"));
  REQUIRE_THAT(send_then_receive([&](FrameStream& s) { hello(s, 1, 1); }),
               Catch::Contains("HELLO says 1 bytes"));
  REQUIRE_THAT(send_then_receive([&](FrameStream& s) {
                 REQUIRE(s.Send(static_cast<FrameType>(99), {}).ok());
               }),
               Catch::Contains("unknown frame type 99"));
  REQUIRE_THAT(send_then_receive([&](FrameStream& s) {
                 hello(s);
                 uint64_t gpa = kRam;  // one page past the end
                 std::vector<uint8_t> page(4096, 1);
                 REQUIRE(s.Send(FrameType::kPages,
                                {reinterpret_cast<const uint8_t*>(&gpa), 8}, page).ok());
               }),
               Catch::Contains("not guest RAM"));
  REQUIRE_THAT(send_then_receive([&](FrameStream& s) {
                 hello(s);
                 uint64_t z[2] = {4096, 4096ULL << 20};
                 REQUIRE(s.Send(FrameType::kZeroes, {reinterpret_cast<const uint8_t*>(z), 16}).ok());
               }),
               Catch::Contains("zero range"));
  REQUIRE_THAT(send_then_receive([&](FrameStream& s) {
                 hello(s);
                 REQUIRE(s.Send(FrameType::kEnd, {}).ok());
               }),
               Catch::Contains("END before STATE"));
  REQUIRE_THAT(send_then_receive([&](FrameStream& s) {
                 hello(s);
                 std::string junk = "not a snapshot at all";
                 REQUIRE(s.Send(FrameType::kState,
                                {reinterpret_cast<const uint8_t*>(junk.data()), junk.size()}).ok());
               }),
               Catch::Contains("STATE"));
}

TEST_CASE("stream addresses: unix and tcp, refused with the reason") {
  auto u = ParseStreamAddress("unix:/run/m.sock");
  REQUIRE(u.ok());
  REQUIRE(u->path == "/run/m.sock");
  auto t = ParseStreamAddress("tcp:[::1]:4444");
  REQUIRE(t.ok());
  REQUIRE(t->host == "::1");
  REQUIRE(t->port == "4444");
  REQUIRE_THAT(std::string(ParseStreamAddress("tcp:host:70000").status().message()),
               Catch::Contains("port must be 0 to 65535"));
  REQUIRE_THAT(std::string(ParseStreamAddress("udp:x:1").status().message()),
               Catch::Contains("expected unix:PATH or tcp:HOST:PORT"));
  REQUIRE_FALSE(ParseStreamAddress("unix:").ok());

  // A listener on loopback TCP takes a connection and carries a frame.
  auto l = Listen("tcp:127.0.0.1:0");
  REQUIRE(l.ok());
  sockaddr_in sa = {};
  socklen_t len = sizeof sa;
  REQUIRE(::getsockname(l->get(), reinterpret_cast<sockaddr*>(&sa), &len) == 0);
  std::string addr = "tcp:127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  auto c = Connect(addr, absl::Seconds(5));
  REQUIRE(c.ok());
  auto a = Accept(l->get(), absl::Seconds(5));
  REQUIRE(a.ok());
  FrameStream out(c->get()), in(a->get());
  REQUIRE(out.Send(FrameType::kEnd, {}).ok());
  REQUIRE(in.Expect(FrameType::kEnd, absl::Now() + absl::Seconds(5)).ok());
  REQUIRE(Accept(l->get(), absl::Milliseconds(10)).status().code() ==
          absl::StatusCode::kDeadlineExceeded);
}
