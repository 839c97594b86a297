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
#include <cstdlib>
#include <cstring>
#include <thread>

#include "libs/migration/src/fake_source.h"
#include "migration/address.h"
#include "migration/snapshot.h"

using namespace migration;
using namespace migration::testing;

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
  auto ram = ReceiveAll(p.fd[1]);
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
      // Every round leaves more dirty than 5 ms at 64 MiB/s sends (82
      // pages), even on a host too busy to run the guest thread meanwhile.
      result = Migrate(p.fd[0], vm, o, [&](const MigrationProgress&) {
        CHECK(vm.WaitForWrites(200));
      });
    });
    auto ram = ReceiveAll(p.fd[1]);
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
        // Rounds 1 to 3 find 200 pages dirty however busy the host is:
        // two strikes (more dirtied than half the last round sent), so
        // the throttle starts; then the guest runs as it will.
        if (throttles.size() < 3) CHECK(vm.WaitForWrites(200));
        throttles.push_back(m.throttle_percent);
      });
    });
    auto ram = ReceiveAll(p.fd[1]);
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

TEST_CASE("post-copy: a destination lost after GO leaves the source stopped, its state intact") {
  FakeVm vm(20);
  Pair p;
  absl::Status result;
  std::thread src([&] {
    MigrationOptions o;
    o.mode = MigrationMode::kPostcopy;
    o.postcopy_after_rounds = 0;
    o.postcopy_bandwidth_bytes_per_s = 64 << 10;  // still pushing when the link goes
    bool waited = false;  // pages left for post-copy, however busy the host
    result = Migrate(p.fd[0], vm, o, [&](const MigrationProgress&) {
      if (!waited) CHECK(vm.WaitForWrites(256));
      waited = true;
    });
  });
  {
    FrameStream s(p.fd[1]);
    REQUIRE(ReceiveHello(s, absl::Now() + absl::Seconds(5)).ok());
    auto ram = Ram();
    auto in = ReceiveMemoryAndState(s, *ram, absl::Seconds(10));
    REQUIRE(in.ok());
    REQUIRE(in->postcopy.has_value());
    REQUIRE(CountPages(*in->postcopy) > 0);
    REQUIRE(s.Send(FrameType::kDone, {}).ok());
    REQUIRE(s.Expect(FrameType::kGo, absl::Now() + absl::Seconds(5)).ok());
    ::shutdown(p.fd[1], SHUT_RDWR);
  }
  src.join();
  INFO(result.message());
  REQUIRE(SourceStranded(result));
  REQUIRE_THAT(std::string(result.message()), Catch::Contains("stays paused here"));
  REQUIRE(vm.stops_ == 1);
  REQUIRE(vm.resumes_ == 0);
  REQUIRE_FALSE(vm.migrated_);
  REQUIRE_FALSE(vm.logging_);
}

TEST_CASE("post-copy: a destination that gives up before GO leaves the source running") {
  FakeVm vm(20);
  Pair p;
  absl::Status result;
  std::thread src([&] {
    MigrationOptions o;
    o.mode = MigrationMode::kPostcopy;
    result = Migrate(p.fd[0], vm, o, nullptr);
  });
  {
    FrameStream s(p.fd[1]);
    REQUIRE(ReceiveHello(s, absl::Now() + absl::Seconds(5)).ok());
    auto ram = Ram();
    REQUIRE(ReceiveMemoryAndState(s, *ram, absl::Seconds(10)).ok());
    REQUIRE(s.SendText(FrameType::kError, "no userfaultfd here").ok());
  }
  src.join();
  REQUIRE_THAT(std::string(result.message()), Catch::Contains("no userfaultfd here"));
  REQUIRE_FALSE(SourceStranded(result));
  REQUIRE(vm.stops_ == 1);
  REQUIRE(vm.resumes_ == 1);
  REQUIRE_FALSE(vm.migrated_);
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
                 std::vector<uint8_t> short_bitmap(8, 0xff);
                 REQUIRE(s.Send(FrameType::kPostcopy, short_bitmap).ok());
               }),
               Catch::Contains("a POSTCOPY bitmap of 8 bytes for RAM that needs 512"));
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

TEST_CASE("AcceptSource skips probes and junk until a source says HELLO") {
  char dir[] = "/tmp/accept-source-XXXXXX";  // TEST_TMPDIR may be longer than sun_path
  REQUIRE(::mkdtemp(dir) != nullptr);
  std::string addr = std::string("unix:") + dir + "/s.sock";
  auto listener = Listen(addr);
  INFO(listener.status().message());
  REQUIRE(listener.ok());
  // A second listener on a live path is refused; the probe it makes is
  // one of the connections AcceptSource ignores below.
  auto again = Listen(addr);
  REQUIRE_FALSE(again.ok());
  CHECK_THAT(std::string(again.status().message()), Catch::Contains("another process is listening"));

  FakeVm vm(0);
  absl::Status result;
  std::thread src([&] {
    {  // connects and closes
      auto c = Connect(addr, absl::Seconds(5));
      REQUIRE(c.ok());
    }
    {  // sends bytes that are no frame
      auto c = Connect(addr, absl::Seconds(5));
      REQUIRE(c.ok());
      REQUIRE(::write(c->get(), "GET / HTTP/1.0\r\n\r\n", 18) == 18);
      char b[256];
      while (::read(c->get(), b, sizeof b) > 0) {}
    }
    auto c = Connect(addr, absl::Seconds(5));
    REQUIRE(c.ok());
    result = Migrate(c->get(), vm, MigrationOptions{}, [](const MigrationProgress&) {});
  });
  std::vector<std::string> ignored;
  AcceptOptions o;
  o.deadline = absl::Now() + absl::Seconds(20);
  o.ignored = [&](const absl::Status& why) { ignored.emplace_back(why.message()); };
  auto source = AcceptSource(listener->get(), o);
  REQUIRE(source.ok());
  FrameStream s(source->conn.get());
  auto ram = Ram();
  REQUIRE(ReceiveMemoryAndState(s, *ram, absl::Seconds(10)).ok());
  REQUIRE(FinishIncoming(s, absl::Seconds(10)).ok());
  src.join();
  INFO(result.message());
  CHECK(result.ok());
  CHECK(ignored.size() == 3);  // Listen's probe, the closer, the HTTP request
  CHECK(SameRam(vm.memory(), *ram));

  AcceptOptions stop;
  stop.stop = [] { return true; };
  CHECK(absl::IsCancelled(AcceptSource(listener->get(), stop).status()));
  AcceptOptions late;
  late.deadline = absl::Now() + absl::Milliseconds(300);
  CHECK(absl::IsDeadlineExceeded(AcceptSource(listener->get(), late).status()));

  listener->reset();  // a dead listener's socket file is replaced
  CHECK(Listen(addr).ok());
  ::unlink((std::string(dir) + "/s.sock").c_str());
  ::rmdir(dir);
}
