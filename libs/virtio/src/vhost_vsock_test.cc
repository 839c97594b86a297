// VhostVsock against the real kernel: a mock driver plays the guest, host
// AF_VSOCK sockets play the host side. Needs /dev/vhost-vsock, which this
// fleet's hosts lack: vhost_vsock_test.sh runs this binary directly where
// the device exists and inside tools/nested-kvm (module loaded) elsewhere.
// The error-path cases need no device.
#include "virtio/vhost_vsock.h"

#include <linux/vm_sockets.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "kindling/test_skip.h"
#include "libs/virtio/src/test_env.h"
#include "virtio/vsock.h"

namespace virtio {
namespace {

constexpr char kDevice[] = "/dev/vhost-vsock";

bool HaveDevice() { return ::access(kDevice, R_OK | W_OK) == 0; }

uint64_t TestCid() { return 1000 + static_cast<uint64_t>(::getpid()) % 100000; }

// Runs a device call on the loop thread and hands back its status (Catch2
// assertions stay on the test thread).
template <typename Fn>
absl::Status OnLoop(EventLoop& loop, Fn fn) {
  absl::Status s;
  loop.RunSync([&] { s = fn(); });
  return s;
}

template <typename Pred>
bool WaitFor(Pred pred, int ms = 5000) {
  for (int i = 0; i < ms; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return pred();
}

// Three queues driven by mock drivers, activated like a transport would.
struct Guest {
  Guest() : mem(test::MakeMemory()) {
    drivers.reserve(3);
    for (int i = 0; i < 3; ++i) {
      drivers.emplace_back(*mem, GuestAddress(0x10000 + 0x10000 * i), 16);
      drivers.back().Configure(queues[i]);
      REQUIRE(queues[i].Activate(*mem, Bit(kFVersion1)).ok());
    }
  }
  ActivateContext Context(VhostVsock& dev, EventLoop& loop) {
    return ActivateContext{mem.get(), queues, &irq, Bit(kFVersion1),
                           [&dev, &loop, this](uint16_t q) {
                             loop.Post([&dev, q, this] { last_error = dev.ProcessQueue(q); });
                           },
                           {}};
  }
  // One writable 4 KiB buffer on rx at `addr`.
  void PostRx(uint64_t addr) {
    drivers[0].AddChain({{addr, 4096, true}});  // AddChain publishes
  }
  void SendTx(const VsockHdr& h, const std::string& data, uint64_t addr) {
    REQUIRE(mem->WriteObj(GuestAddress(addr), h).ok());
    REQUIRE(mem->Write(GuestAddress(addr + sizeof(h)),
                       {reinterpret_cast<const uint8_t*>(data.data()), data.size()})
                .ok());
    drivers[1].AddChain({{addr, static_cast<uint32_t>(sizeof(h) + data.size()), false}});
  }
  VsockHdr RxHeader(uint64_t addr) { return *mem->ReadObj<VsockHdr>(GuestAddress(addr)); }

  std::unique_ptr<vm_memory::GuestMemory> mem;
  Queue queues[3];
  std::vector<testing::MockDriver> drivers;
  test::CountingInterrupt irq;
  absl::Status last_error;
};

TEST_CASE("vhost-vsock: a missing device and a bad CID are clear errors") {
  EventLoop loop("t");
  auto missing = VhostVsock::Create(loop, {.guest_cid = 3, .device_path = "/nonexistent/vhost"});
  REQUIRE_FALSE(missing.ok());
  INFO(missing.status().message());
  REQUIRE(missing.status().message().find("/nonexistent/vhost") != std::string::npos);
  REQUIRE(missing.status().message().find("vhost_vsock module") != std::string::npos);
  for (uint64_t cid : {0ULL, 2ULL, 0xffffffffULL, 1ULL << 40}) {
    auto bad = VhostVsock::Create(loop, {.guest_cid = cid, .device_path = kDevice});
    REQUIRE_FALSE(bad.ok());
    REQUIRE(bad.status().message().find("must be 3 to 4294967294") != std::string::npos);
  }
}

TEST_CASE("vhost-vsock: streams both ways through the kernel") {
  if (!HaveDevice()) {
    KINDLING_SKIP(std::string(kDevice) + " is absent (vhost_vsock_test.sh runs this under nested KVM)");
  }
  EventLoop loop("vhost");
  Guest g;  // outlives the device: the kernel maps its RAM until Stop
  const uint64_t cid = TestCid();
  auto created = VhostVsock::Create(loop, {.guest_cid = cid});
  REQUIRE(created.ok());
  std::shared_ptr<VhostVsock> dev = std::move(*created);

  SECTION("a second VM cannot take the same CID") {
    auto again = VhostVsock::Create(loop, {.guest_cid = cid});
    REQUIRE_FALSE(again.ok());
    REQUIRE(again.status().message().find("already in use") != std::string::npos);
  }

  uint8_t config[8] = {};
  dev->ReadConfig(0, config);
  uint64_t config_cid;
  std::memcpy(&config_cid, config, 8);
  REQUIRE(config_cid == cid);

  ActivateContext ctx = g.Context(*dev, loop);
  REQUIRE(OnLoop(loop, [&] { return dev->Activate(ctx); }).ok());

  // The host connects to the guest's port 1234: the kernel puts an
  // OP_REQUEST into the rx buffer.
  g.PostRx(0x100000);
  REQUIRE(OnLoop(loop, [&] { return dev->ProcessQueue(VhostVsock::kRxQueue); }).ok());
  int host = ::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  REQUIRE(host >= 0);
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = static_cast<unsigned>(cid);
  addr.svm_port = 1234;
  int rc = ::connect(host, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  REQUIRE((rc == 0 || errno == EINPROGRESS));
  REQUIRE(WaitFor([&] { return g.drivers[0].used_idx() == 1; }));
  REQUIRE(WaitFor([&] { return g.irq.queue.load() >= 1; }));
  VsockHdr req = g.RxHeader(0x100000);
  CHECK(req.op == kVsockOpRequest);
  CHECK(req.type == kVsockTypeStream);
  CHECK(req.src_cid == kVsockHostCid);
  CHECK(req.dst_cid == cid);
  CHECK(req.dst_port == 1234);

  // The guest accepts; the host's connect completes.
  VsockHdr resp{cid, kVsockHostCid, 1234, req.src_port, 0, kVsockTypeStream, kVsockOpResponse,
                0, 65536, 0};
  g.SendTx(resp, "", 0x200000);
  REQUIRE(OnLoop(loop, [&] { return dev->ProcessQueue(VhostVsock::kTxQueue); }).ok());
  pollfd p{host, POLLOUT, 0};
  REQUIRE(::poll(&p, 1, 5000) == 1);
  int err = -1;
  socklen_t len = sizeof(err);
  REQUIRE(::getsockopt(host, SOL_SOCKET, SO_ERROR, &err, &len) == 0);
  REQUIRE(err == 0);

  // host -> guest
  g.PostRx(0x101000);
  REQUIRE(OnLoop(loop, [&] { return dev->ProcessQueue(VhostVsock::kRxQueue); }).ok());
  REQUIRE(::write(host, "hello", 5) == 5);
  REQUIRE(WaitFor([&] { return g.drivers[0].used_idx() == 2; }));
  VsockHdr rw = g.RxHeader(0x101000);
  CHECK(rw.op == kVsockOpRw);
  REQUIRE(rw.len == 5);
  char payload[5];
  REQUIRE(g.mem->Read(GuestAddress(0x101000 + sizeof(VsockHdr)),
                      {reinterpret_cast<uint8_t*>(payload), 5})
              .ok());
  CHECK(std::string(payload, 5) == "hello");

  // guest -> host
  VsockHdr data{cid, kVsockHostCid, 1234, req.src_port, 5, kVsockTypeStream, kVsockOpRw,
                0, 65536, 5};
  g.SendTx(data, "world", 0x201000);
  REQUIRE(OnLoop(loop, [&] { return dev->ProcessQueue(VhostVsock::kTxQueue); }).ok());
  p = {host, POLLIN, 0};
  REQUIRE(::poll(&p, 1, 5000) == 1);
  char got[16] = {};
  REQUIRE(::read(host, got, sizeof(got)) == 5);
  CHECK(std::string(got, 5) == "world");

  SECTION("a buffer outside guest RAM puts the device into needs-reset") {
    g.drivers[1].AddChain({{1ULL << 40, 64, false}});
    REQUIRE(OnLoop(loop, [&] { return dev->ProcessQueue(VhostVsock::kTxQueue); }).ok());
    bool failed = WaitFor([&] {
      bool f = false;
      loop.RunSync([&] { f = !g.last_error.ok(); });
      return f;
    });
    REQUIRE(failed);
    CHECK(g.last_error.message().find("outside guest RAM") != std::string::npos);
  }

  SECTION("reset stops the rings and frees the CID with the device") {
    bool running = true;
    loop.RunSync([&] {
      dev->Reset();
      running = dev->running();
    });
    REQUIRE_FALSE(running);
    dev.reset();
    auto again = VhostVsock::Create(loop, {.guest_cid = cid});
    INFO(again.status().message());
    REQUIRE(again.ok());
  }
  ::close(host);
  loop.RunSync([&] { dev.reset(); });
}

}  // namespace
}  // namespace virtio
