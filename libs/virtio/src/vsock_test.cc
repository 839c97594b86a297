#include "virtio/vsock.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "libs/virtio/src/test_env.h"

namespace virtio {
namespace {

constexpr uint64_t kGuestCid = 3;

struct Packet {
  VsockHdr h;
  std::string data;
};

// A blocking Unix socket with a 2 s receive timeout.
int Connect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

int Listen(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(::listen(fd, 8) == 0);
  return fd;
}

int Accept(int listener) {
  pollfd p{listener, POLLIN, 0};
  REQUIRE(::poll(&p, 1, 2000) == 1);
  int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

void Write(int fd, std::string_view s) {
  REQUIRE(::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()));
}

// Reads exactly n bytes (or what came before EOF / the timeout).
std::string Read(int fd, size_t n) {
  std::string out;
  char buf[4096];
  while (out.size() < n) {
    ssize_t r = ::read(fd, buf, std::min(sizeof(buf), n - out.size()));
    if (r <= 0) break;
    out.append(buf, r);
  }
  return out;
}

// The device closed its end: EOF, or a reset when it closed with our
// bytes unread.
bool AtEof(int fd) {
  char c;
  ssize_t n = ::read(fd, &c, 1);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

VsockHdr G(uint16_t op, uint32_t guest_port, uint32_t host_port, uint32_t len = 0,
           uint32_t flags = 0, uint32_t buf_alloc = 65536, uint32_t fwd_cnt = 0) {
  return {kGuestCid, kVsockHostCid, guest_port, host_port, len, kVsockTypeStream,
          op,        flags,         buf_alloc,  fwd_cnt};
}

struct VsockEnv {
  explicit VsockEnv(uint32_t max_connections = 1024) {
    char tmpl[] = "/tmp/vsock_test.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    path = dir + "/v.sock";
    auto v = Vsock::Create(loop, {kGuestCid, path, max_connections});
    REQUIRE(v.ok());
    vsock = *v;
    rx.Configure(queues[0]);
    tx.Configure(queues[1]);
    ev.Configure(queues[2]);
    for (Queue& q : queues) REQUIRE(q.Activate(*mem, 0).ok());
    ActivateContext ctx{mem.get(), queues, &irq, Bit(kFVersion1), [this](uint16_t q) {
                          loop.Post([this, q] {
                            absl::Status s = vsock->ProcessQueue(q);
                            if (!s.ok()) last_error = s;
                          });
                        }};
    loop.RunSync([&] { REQUIRE(vsock->Activate(ctx).ok()); });
  }
  ~VsockEnv() {
    loop.RunSync([&] { vsock->Reset(); });
    vsock.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  absl::Status Process(uint16_t q) {
    absl::Status s;
    loop.RunSync([&] { s = vsock->ProcessQueue(q); });
    return s;
  }
  // Offers `n` rx buffers of 4 KiB and notifies.
  void GiveRxBuffers(int n) {
    for (int i = 0; i < n; ++i) AddRxBuffer();
    loop.Post([this] { (void)vsock->ProcessQueue(Vsock::kRxQueue); });
  }
  void AddRxBuffer() {
    uint64_t addr = rx.scratch().value + 0x1000 * (next_rx_++ % 8);
    uint16_t head = rx.AddChain({{addr, 0x1000, true}});
    rx_addr[head] = addr;
  }
  // The guest sends one packet (header and payload in one buffer).
  absl::Status Send(VsockHdr h, std::string_view payload = {}) {
    uint64_t addr = tx.scratch().value + 0x20000 * (next_tx_++ % 4);
    REQUIRE(mem->WriteObj(GuestAddress(addr), h).ok());
    REQUIRE(mem->Write(GuestAddress(addr + 44),
                       {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()})
                .ok());
    tx.AddChain({{addr, static_cast<uint32_t>(44 + payload.size()), false}});
    return Process(Vsock::kTxQueue);
  }
  // The next packet the device gave the guest, waiting up to `ms`; the
  // buffer is offered again.
  std::optional<Packet> Next(int ms = 2000) {
    for (int i = 0; i < ms / 5 && rx.used_idx() == consumed_; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (rx.used_idx() == consumed_) return std::nullopt;
    VirtqUsedElem u = rx.used(consumed_++);
    uint64_t addr = rx_addr.at(static_cast<uint16_t>(u.id));
    Packet p;
    p.h = mem->ReadObj<VsockHdr>(GuestAddress(addr)).value();
    REQUIRE(u.len == 44 + p.h.len);
    p.data.resize(p.h.len);
    REQUIRE(mem->Read(GuestAddress(addr + 44),
                      {reinterpret_cast<uint8_t*>(p.data.data()), p.data.size()})
                .ok());
    GiveRxBuffers(1);
    return p;
  }
  // Host connects through `path` to guest port `port`; returns the host
  // socket and the device's host-side port, once the guest accepted.
  std::pair<int, uint32_t> HostConnect(uint32_t port, std::string_view extra = {}) {
    int fd = Connect(path);
    Write(fd, absl::StrCat("CONNECT ", port, "\n", std::string(extra)));
    auto req = Next();
    REQUIRE(req);
    REQUIRE(req->h.op == kVsockOpRequest);
    REQUIRE(req->h.src_cid == kVsockHostCid);
    REQUIRE(req->h.dst_cid == kGuestCid);
    REQUIRE(req->h.dst_port == port);
    REQUIRE(req->h.type == kVsockTypeStream);
    REQUIRE(req->h.buf_alloc == Vsock::kBufAlloc);
    uint32_t hp = req->h.src_port;
    REQUIRE(Send(G(kVsockOpResponse, port, hp)).ok());
    std::string ok = absl::StrCat("OK ", hp, "\n");
    REQUIRE(Read(fd, ok.size()) == ok);
    return {fd, hp};
  }
  bool WaitConnections(size_t n) {
    for (int i = 0; i < 400 && vsock->connections() != n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return vsock->connections() == n;
  }

  std::string dir, path;
  std::unique_ptr<vm_memory::GuestMemory> mem = test::MakeMemory();
  EventLoop loop{"vsock-test"};
  Queue queues[3] = {Queue(256), Queue(256), Queue(256)};
  testing::MockDriver rx{*mem, GuestAddress(0x10000), 16};
  testing::MockDriver tx{*mem, GuestAddress(0x80000), 16};
  testing::MockDriver ev{*mem, GuestAddress(0x180000), 16};
  test::CountingInterrupt irq;
  absl::Status last_error;
  std::shared_ptr<Vsock> vsock;
  std::map<uint16_t, uint64_t> rx_addr;
  uint16_t consumed_ = 0;
  int next_rx_ = 0, next_tx_ = 0;
};

TEST_CASE("virtio-vsock: config and creation errors") {
  VsockEnv e;
  uint64_t cid = 0;
  e.vsock->ReadConfig(0, {reinterpret_cast<uint8_t*>(&cid), 8});
  REQUIRE(cid == kGuestCid);
  REQUIRE(e.vsock->num_queues() == 3);
  REQUIRE(absl::IsInvalidArgument(Vsock::Create(e.loop, {2, e.path + "x"}).status()));
  auto bad = Vsock::Create(e.loop, {3, "/nonexistent-dir/v.sock"});
  REQUIRE_THAT(std::string(bad.status().message()), Catch::Contains("/nonexistent-dir/v.sock"));
}

TEST_CASE("virtio-vsock: host connects with CONNECT, bytes flow both ways, then close") {
  VsockEnv e;
  e.GiveRxBuffers(8);
  auto [fd, hp] = e.HostConnect(1234);
  REQUIRE(hp >= (1u << 30));
  REQUIRE(e.vsock->connections() == 1);

  Write(fd, "ping");
  auto rw = e.Next();
  REQUIRE(rw);
  REQUIRE(rw->h.op == kVsockOpRw);
  REQUIRE(rw->h.src_port == hp);
  REQUIRE(rw->h.dst_port == 1234);
  REQUIRE(rw->data == "ping");

  REQUIRE(e.Send(G(kVsockOpRw, 1234, hp, 4, 0, 65536, 4), "pong").ok());
  REQUIRE(Read(fd, 4) == "pong");

  // fwd_cnt counts what reached the host socket (not the OK line).
  for (int i = 0; i < 100; ++i) {
    REQUIRE(e.Send(G(kVsockOpCreditRequest, 1234, hp)).ok());
    auto up = e.Next();
    REQUIRE(up);
    REQUIRE(up->h.op == kVsockOpCreditUpdate);
    if (up->h.fwd_cnt == 4) break;
    REQUIRE(i < 99);
  }

  ::close(fd);  // the host is done sending
  auto sd = e.Next();
  REQUIRE(sd);
  REQUIRE(sd->h.op == kVsockOpShutdown);
  REQUIRE(sd->h.flags == kVsockShutdownSend);
  REQUIRE(e.Send(G(kVsockOpShutdown, 1234, hp, 0, kVsockShutdownRcv | kVsockShutdownSend)).ok());
  auto rst = e.Next();
  REQUIRE(rst);
  REQUIRE(rst->h.op == kVsockOpRst);
  REQUIRE(e.WaitConnections(0));
  REQUIRE(e.last_error.ok());
}

TEST_CASE("virtio-vsock: bytes sent right after the CONNECT line are delivered") {
  VsockEnv e;
  e.GiveRxBuffers(8);
  auto [fd, hp] = e.HostConnect(77, "early");
  auto rw = e.Next();
  REQUIRE(rw);
  REQUIRE(rw->h.op == kVsockOpRw);
  REQUIRE(rw->data == "early");
  // The guest refusing later: RST closes the host socket.
  REQUIRE(e.Send(G(kVsockOpRst, 77, hp)).ok());
  REQUIRE(AtEof(fd));
  ::close(fd);
}

TEST_CASE("virtio-vsock: a refused or malformed CONNECT closes the host socket") {
  VsockEnv e;
  e.GiveRxBuffers(8);
  SECTION("guest refuses") {
    int fd = Connect(e.path);
    Write(fd, "CONNECT 52\n");
    auto req = e.Next();
    REQUIRE(req);
    REQUIRE(e.Send(G(kVsockOpRst, 52, req->h.src_port)).ok());
    REQUIRE(AtEof(fd));
    ::close(fd);
  }
  SECTION("not a CONNECT line") {
    int fd = Connect(e.path);
    Write(fd, "CONNECT x52\n");
    REQUIRE(AtEof(fd));
    ::close(fd);
  }
  SECTION("a line longer than the limit") {
    int fd = Connect(e.path);
    Write(fd, std::string(200, '7'));
    REQUIRE(AtEof(fd));
    ::close(fd);
  }
  SECTION("a port past 32 bits") {
    int fd = Connect(e.path);
    Write(fd, "CONNECT 4294967296\n");
    REQUIRE(AtEof(fd));
    ::close(fd);
  }
  REQUIRE_FALSE(e.Next(100));
  REQUIRE(e.WaitConnections(0));
}

TEST_CASE("virtio-vsock: the guest connects to <uds_path>_<port>") {
  VsockEnv e;
  e.GiveRxBuffers(8);
  int listener = Listen(e.path + "_5000");
  REQUIRE(e.Send(G(kVsockOpRequest, 999, 5000)).ok());
  int fd = Accept(listener);
  REQUIRE(fd >= 0);
  auto resp = e.Next();
  REQUIRE(resp);
  REQUIRE(resp->h.op == kVsockOpResponse);
  REQUIRE(resp->h.src_port == 5000);
  REQUIRE(resp->h.dst_port == 999);

  REQUIRE(e.Send(G(kVsockOpRw, 999, 5000, 2), "hi").ok());
  REQUIRE(Read(fd, 2) == "hi");
  Write(fd, "yo");
  auto rw = e.Next();
  REQUIRE(rw);
  REQUIRE(rw->data == "yo");

  // Guest shuts down sending: the host sees EOF but may still write.
  REQUIRE(e.Send(G(kVsockOpShutdown, 999, 5000, 0, kVsockShutdownSend)).ok());
  REQUIRE(AtEof(fd));
  Write(fd, "late");
  rw = e.Next();
  REQUIRE(rw);
  REQUIRE(rw->data == "late");
  REQUIRE(e.Send(G(kVsockOpRst, 999, 5000)).ok());
  REQUIRE(e.WaitConnections(0));
  ::close(fd);
  ::close(listener);
}

TEST_CASE("virtio-vsock: nobody listening on the host port means RST") {
  VsockEnv e;
  e.GiveRxBuffers(8);
  REQUIRE(e.Send(G(kVsockOpRequest, 999, 6000)).ok());
  auto rst = e.Next();
  REQUIRE(rst);
  REQUIRE(rst->h.op == kVsockOpRst);
  REQUIRE(rst->h.src_port == 6000);
  REQUIRE(rst->h.dst_port == 999);
  REQUIRE(e.WaitConnections(0));
}

TEST_CASE("virtio-vsock: credit limits what goes to the guest, and what it may send") {
  VsockEnv e;
  e.GiveRxBuffers(8);
  int listener = Listen(e.path + "_5001");
  // The guest has a 10-byte receive buffer.
  REQUIRE(e.Send(G(kVsockOpRequest, 1000, 5001, 0, 0, 10)).ok());
  int fd = Accept(listener);
  REQUIRE(e.Next()->h.op == kVsockOpResponse);
  Write(fd, std::string(25, 'a'));
  auto rw = e.Next();
  REQUIRE(rw);
  REQUIRE(rw->h.op == kVsockOpRw);
  REQUIRE(rw->h.len == 10);
  auto cr = e.Next();
  REQUIRE(cr);
  REQUIRE(cr->h.op == kVsockOpCreditRequest);
  REQUIRE_FALSE(e.Next(100));  // nothing more until the guest has room
  REQUIRE(e.Send(G(kVsockOpCreditUpdate, 1000, 5001, 0, 0, 10, 10)).ok());
  rw = e.Next();
  REQUIRE(rw);
  REQUIRE(rw->h.len == 10);

  // More than the device's buf_alloc in one go: RST, connection gone.
  std::string big(Vsock::kBufAlloc + 1, 'b');
  REQUIRE(e.Send(G(kVsockOpRw, 1000, 5001, big.size(), 0, 10, 20), big).ok());
  for (;;) {
    auto p = e.Next();
    REQUIRE(p);
    if (p->h.op == kVsockOpRst) break;
  }
  REQUIRE(e.WaitConnections(0));
  REQUIRE(AtEof(fd));
  ::close(fd);
  ::close(listener);
}

TEST_CASE("virtio-vsock: malformed packets get RST, broken ones break the device") {
  VsockEnv e;
  e.GiveRxBuffers(8);
  auto expect_rst = [&](VsockHdr h) {
    REQUIRE(e.Send(h).ok());
    auto p = e.Next();
    REQUIRE(p);
    REQUIRE(p->h.op == kVsockOpRst);
    REQUIRE(p->h.dst_cid == kGuestCid);
    REQUIRE(p->h.src_port == h.dst_port);
    REQUIRE(p->h.dst_port == h.src_port);
  };
  SECTION("unknown op") { expect_rst(G(99, 1, 2)); }
  SECTION("data for no connection") { expect_rst(G(kVsockOpRw, 1, 2)); }
  SECTION("a source CID that is not the guest's") {
    VsockHdr h = G(kVsockOpRequest, 1, 2);
    h.src_cid = 7;
    expect_rst(h);
  }
  SECTION("a destination other than the host") {
    VsockHdr h = G(kVsockOpRequest, 1, 2);
    h.dst_cid = 5;
    expect_rst(h);
  }
  SECTION("seqpacket, not negotiated") {
    VsockHdr h = G(kVsockOpRequest, 1, 2);
    h.type = 2;
    expect_rst(h);
  }
  SECTION("RST is never answered") {
    REQUIRE(e.Send(G(kVsockOpRst, 1, 2)).ok());
    REQUIRE_FALSE(e.Next(100));
  }
  SECTION("len past the buffers") {
    absl::Status s = e.Send(G(kVsockOpRw, 1, 2, 100), "short");
    REQUIRE_THAT(std::string(s.message()), Catch::Contains("runs past its buffers"));
  }
  SECTION("shorter than a header") {
    e.tx.AddChain({{e.tx.scratch().value, 20, false}});
    REQUIRE_THAT(std::string(e.Process(Vsock::kTxQueue).message()),
                 Catch::Contains("shorter than its 44-byte header"));
  }
  SECTION("an rx buffer too small for a header") {
    VsockEnv f;
    f.rx.AddChain({{f.rx.scratch().value, 16, true}});
    REQUIRE(f.Send(G(kVsockOpRw, 1, 2)).ok());  // an RST is due: rx runs
    f.loop.RunSync([] {});
    REQUIRE_THAT(std::string(f.last_error.message()),
                 Catch::Contains("cannot hold a 44-byte header"));
  }
  REQUIRE(e.last_error.ok());
}

TEST_CASE("virtio-vsock: the number of connections is bounded") {
  VsockEnv e(2);
  e.GiveRxBuffers(8);
  int listener = Listen(e.path + "_7000");
  for (uint32_t port = 1; port <= 3; ++port) {
    REQUIRE(e.Send(G(kVsockOpRequest, port, 7000)).ok());
  }
  int responses = 0, rsts = 0;
  for (int i = 0; i < 3; ++i) {
    auto p = e.Next();
    REQUIRE(p);
    if (p->h.op == kVsockOpResponse) ++responses;
    if (p->h.op == kVsockOpRst) {
      ++rsts;
      REQUIRE(p->h.dst_port == 3);
    }
  }
  REQUIRE(responses == 2);
  REQUIRE(rsts == 1);
  // The host cannot add one either: its socket is closed at once.
  int fd = Connect(e.path);
  REQUIRE(AtEof(fd));
  ::close(fd);
  ::close(listener);
}

}  // namespace
}  // namespace virtio

namespace virtio {
namespace {

TEST_CASE("vsock: after a restore the driver hears TRANSPORT_RESET on the event queue") {
  VsockEnv env;
  absl::Status s;
  env.loop.RunSync([&] { s = env.vsock->Restored(); });
  REQUIRE(s.ok());  // no event buffer yet: nothing to say, nothing broken
  REQUIRE(env.ev.used_idx() == 0);
  uint64_t buf = env.ev.scratch().value;
  REQUIRE(env.mem->WriteObj(GuestAddress(buf), uint32_t{0xffffffff}).ok());
  env.ev.AddChain({{buf, 4, true}});
  int irqs = env.irq.queue;
  env.loop.RunSync([&] { s = env.vsock->Restored(); });
  REQUIRE(s.ok());
  REQUIRE(env.ev.used_idx() == 1);
  REQUIRE(env.ev.used(0).len == 4);
  REQUIRE(env.mem->ReadObj<uint32_t>(GuestAddress(buf)).value() == 0);  // TRANSPORT_RESET
  REQUIRE(env.irq.queue > irqs);
}

}  // namespace
}  // namespace virtio
