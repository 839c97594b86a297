#include "virtio/net.h"

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <map>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "kindling/test_skip.h"
#include "libs/virtio/src/test_env.h"

namespace virtio {
namespace {

constexpr uint16_t kEtherType = 0x88b5;  // IEEE local experimental

// A TAP for one test, up, without IPv6 chatter, plus a packet socket on
// the same interface: the "network" the device is plugged into.
struct NetEnv {
  // Returns false (and says why) if this host cannot make TAPs.
  bool Open(const char* pattern = "kndltest%d") {
    auto t = OpenTap(pattern);
    if (!t.ok()) {
      if (absl::IsPermissionDenied(t.status()) || absl::IsNotFound(t.status())) {
        skip_reason = std::string(t.status().message());
        return false;
      }
      FAIL(t.status().message());
    }
    offloads = t->offloads;
    ifname = t->name;
    std::ofstream(absl::StrCat("/proc/sys/net/ipv6/conf/", ifname, "/disable_ipv6")) << "1\n";
    int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq ifr = {};
    std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
    REQUIRE(::ioctl(s, SIOCGIFFLAGS, &ifr) == 0);
    ifr.ifr_flags |= IFF_UP;
    REQUIRE(::ioctl(s, SIOCSIFFLAGS, &ifr) == 0);
    ::close(s);
    packet = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kEtherType));
    REQUIRE(packet >= 0);
    sockaddr_ll sll = {};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(kEtherType);
    sll.sll_ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
    REQUIRE(::bind(packet, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) == 0);
    net = std::make_unique<Net>(loop, std::move(*t),
                                NetOptions{std::array<uint8_t, 6>{2, 0, 0, 0, 0, 7}});
    rx.Configure(queues[0]);
    tx.Configure(queues[1]);
    REQUIRE(queues[0].Activate(*mem, 0).ok());
    REQUIRE(queues[1].Activate(*mem, 0).ok());
    return true;
  }
  ~NetEnv() {
    if (net) loop.RunSync([&] { net->Reset(); });
    net.reset();
    if (packet >= 0) ::close(packet);
  }
  void Activate(uint64_t features) {
    ActivateContext ctx{mem.get(), queues, &irq, features | Bit(kFVersion1), [this](uint16_t q) {
                          loop.Post([this, q] { last_error = net->ProcessQueue(q); });
                        }};
    loop.RunSync([&] { REQUIRE(net->Activate(ctx).ok()); });
  }
  absl::Status Process(uint16_t q) {
    absl::Status s;
    loop.RunSync([&] { s = net->ProcessQueue(q); });
    return s;
  }
  static std::vector<uint8_t> Frame(uint8_t tag, size_t payload) {
    std::vector<uint8_t> f(14 + payload);
    std::memset(f.data(), 0xff, 6);  // broadcast
    const uint8_t src[6] = {2, 0, 0, 0, 0, 9};
    std::memcpy(f.data() + 6, src, 6);
    f[12] = kEtherType >> 8;
    f[13] = kEtherType & 0xff;
    for (size_t i = 0; i < payload; ++i) f[14 + i] = static_cast<uint8_t>(tag + i);
    return f;
  }
  // The next frame of our ethertype the network saw, or empty.
  std::vector<uint8_t> ReceiveFromNetwork() {
    pollfd p{packet, POLLIN, 0};
    if (::poll(&p, 1, 2000) != 1) return {};
    std::vector<uint8_t> buf(70000);
    ssize_t n = ::recv(packet, buf.data(), buf.size(), 0);
    buf.resize(n > 0 ? n : 0);
    return buf;
  }
  void SendFromNetwork(const std::vector<uint8_t>& f) {
    REQUIRE(::send(packet, f.data(), f.size(), 0) == static_cast<ssize_t>(f.size()));
  }
  bool WaitUsed(testing::MockDriver& d, uint16_t n) {
    for (int i = 0; i < 200 && d.used_idx() != n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return d.used_idx() == n;
  }
  std::vector<uint8_t> Guest(uint64_t addr, size_t n) {
    std::vector<uint8_t> out(n);
    REQUIRE(mem->Read(GuestAddress(addr), out).ok());
    return out;
  }

  std::string skip_reason;
  std::string ifname;
  unsigned offloads = 0;
  int packet = -1;
  std::unique_ptr<vm_memory::GuestMemory> mem = test::MakeMemory();
  EventLoop loop{"net-test"};
  Queue queues[2] = {Queue(256), Queue(256)};
  testing::MockDriver rx{*mem, GuestAddress(0x10000), 16};
  testing::MockDriver tx{*mem, GuestAddress(0x80000), 16};
  test::CountingInterrupt irq;
  absl::Status last_error;
  std::unique_ptr<Net> net;
};

TEST_CASE("virtio-net: OpenTap names the TAP in its errors") {
  auto t = OpenTap("a-name-that-is-far-too-long-for-linux");
  REQUIRE(absl::IsInvalidArgument(t.status()));
  REQUIRE_THAT(std::string(t.status().message()), Catch::Contains("a-name-that"));
}

TEST_CASE("virtio-net: config, MAC and offered features follow the TAP") {
  NetEnv e;
  if (!e.Open()) KINDLING_SKIP(e.skip_reason);
  uint8_t cfg[8] = {};
  e.net->ReadConfig(0, cfg);
  REQUIRE(cfg[0] == 2);
  REQUIRE(cfg[5] == 7);
  REQUIRE((cfg[6] | cfg[7] << 8) == kNetSLinkUp);
  uint64_t f = e.net->features();
  REQUIRE((f & Bit(kNetFMac)) != 0);
  REQUIRE((f & Bit(kNetFStatus)) != 0);
  REQUIRE((f & Bit(kNetFMrgRxbuf)) == 0);
  REQUIRE(((f & Bit(kNetFCsum)) != 0) == ((e.offloads & TUN_F_CSUM) != 0));
  REQUIRE(((f & Bit(kNetFGuestTso4)) != 0) == ((e.offloads & TUN_F_TSO4) != 0));

  // A generated MAC is unicast and locally administered.
  auto t2 = OpenTap("kndltest%d");
  REQUIRE(t2.ok());
  Net other(e.loop, std::move(*t2), {});
  REQUIRE((other.mac()[0] & 3) == 2);
}

TEST_CASE("virtio-net: the TAP's offloads follow what the driver acked") {
  NetEnv e;
  if (!e.Open()) KINDLING_SKIP(e.skip_reason);
  if (!(e.offloads & TUN_F_TSO4)) KINDLING_SKIP("this TAP refuses TSO offloads");
  e.Activate(Bit(kNetFGuestCsum) | Bit(kNetFGuestTso4) | Bit(kNetFHostTso6));
  REQUIRE(e.net->tap_offloads() == (TUN_F_CSUM | TUN_F_TSO4));
  e.loop.RunSync([&] { e.net->Reset(); });
  REQUIRE(e.net->tap_offloads() == 0);
  // TSO without checksum offload is not asked for.
  e.Activate(Bit(kNetFGuestTso4));
  REQUIRE(e.net->tap_offloads() == 0);
}

TEST_CASE("virtio-net: a transmitted frame reaches the network") {
  NetEnv e;
  if (!e.Open()) KINDLING_SKIP(e.skip_reason);
  e.Activate(e.net->features());
  std::vector<uint8_t> frame = NetEnv::Frame(1, 100);
  uint64_t hdr = e.tx.scratch().value, data = hdr + 0x1000;
  REQUIRE(e.mem->WriteObj(GuestAddress(hdr), NetHdr{}).ok());
  REQUIRE(e.mem->Write(GuestAddress(data), frame).ok());
  // Header and frame in separate buffers, the frame split in two.
  e.tx.AddChain({{hdr, 12, false}, {data, 50, false}, {data + 50, 64, false}});
  REQUIRE(e.Process(Net::kTxQueue).ok());
  REQUIRE(e.tx.used_idx() == 1);
  REQUIRE(e.ReceiveFromNetwork() == frame);
  NetStats s = e.net->stats();
  REQUIRE(s.tx_frames == 1);
  REQUIRE(s.tx_bytes == frame.size());
  REQUIRE(e.irq.queue >= 1);
  // The metrics counters say the same.
  std::map<std::string, uint64_t> c;
  for (const auto& [k, v] : e.net->Counters()) c[k] = v;
  CHECK(c.size() == 6);
  CHECK(c["tx_frames"] == 1);
  CHECK(c["tx_bytes"] == frame.size());
  CHECK(c["rx_frames"] == 0);
}

TEST_CASE("virtio-net: a frame from the network lands in the guest's rx buffer") {
  NetEnv e;
  if (!e.Open()) KINDLING_SKIP(e.skip_reason);
  uint64_t buf = e.rx.scratch().value;
  // The header and the frame may share a buffer or not: two buffers here.
  e.rx.AddChain({{buf, 12, true}, {buf + 0x1000, 2048, true}});
  e.Activate(e.net->features());
  std::vector<uint8_t> frame = NetEnv::Frame(7, 200);
  e.SendFromNetwork(frame);
  REQUIRE(e.WaitUsed(e.rx, 1));
  REQUIRE(e.rx.used(0).len == 12 + frame.size());
  NetHdr h = e.mem->ReadObj<NetHdr>(GuestAddress(buf)).value();
  REQUIRE(h.num_buffers == 1);
  REQUIRE(h.gso_type == 0);
  REQUIRE(e.Guest(buf + 0x1000, frame.size()) == frame);
  REQUIRE(e.net->stats().rx_frames == 1);
  REQUIRE(e.net->stats().rx_bytes == frame.size());
}

TEST_CASE("virtio-net: without rx buffers frames wait in the TAP, none dropped") {
  NetEnv e;
  if (!e.Open()) KINDLING_SKIP(e.skip_reason);
  e.Activate(e.net->features());
  std::vector<uint8_t> a = NetEnv::Frame(1, 60), b = NetEnv::Frame(2, 61);
  e.SendFromNetwork(a);
  e.SendFromNetwork(b);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(e.net->stats().rx_frames == 0);
  REQUIRE(e.net->stats().rx_dropped == 0);
  uint64_t buf = e.rx.scratch().value;
  e.rx.AddChain({{buf, 1600, true}});
  e.rx.AddChain({{buf + 0x1000, 1600, true}});
  REQUIRE(e.Process(Net::kRxQueue).ok());  // the driver's notification
  REQUIRE(e.WaitUsed(e.rx, 2));
  REQUIRE(e.Guest(buf + 12, a.size()) == a);
  REQUIRE(e.Guest(buf + 0x1000 + 12, b.size()) == b);
  REQUIRE(e.last_error.ok());
}

TEST_CASE("virtio-net: a frame larger than the rx buffer is dropped and counted") {
  NetEnv e;
  if (!e.Open()) KINDLING_SKIP(e.skip_reason);
  uint64_t buf = e.rx.scratch().value;
  e.rx.AddChain({{buf, 12 + 64, true}});
  e.Activate(e.net->features());
  e.SendFromNetwork(NetEnv::Frame(3, 500));
  std::vector<uint8_t> small = NetEnv::Frame(4, 40);
  e.SendFromNetwork(small);
  REQUIRE(e.WaitUsed(e.rx, 1));  // the same buffer takes the next frame
  REQUIRE(e.rx.used(0).len == 12 + small.size());
  REQUIRE(e.Guest(buf + 12, small.size()) == small);
  REQUIRE(e.net->stats().rx_dropped == 1);
}

TEST_CASE("virtio-net: hostile chains break the device with a reason") {
  NetEnv e;
  if (!e.Open()) KINDLING_SKIP(e.skip_reason);
  e.Activate(e.net->features());
  uint64_t buf = e.tx.scratch().value;
  SECTION("tx chain shorter than the header") {
    e.tx.AddChain({{buf, 8, false}});
    REQUIRE_THAT(std::string(e.Process(Net::kTxQueue).message()),
                 Catch::Contains("12-byte header"));
  }
  SECTION("tx frame over the limit") {
    e.tx.AddChain({{buf, 12 + Net::kMaxFrame + 1, false}});
    REQUIRE_THAT(std::string(e.Process(Net::kTxQueue).message()), Catch::Contains("65562"));
  }
  SECTION("rx chain that cannot hold the header") {
    e.rx.AddChain({{e.rx.scratch().value, 4, true}});
    REQUIRE_THAT(std::string(e.Process(Net::kRxQueue).message()),
                 Catch::Contains("less than the 12-byte"));
  }
  SECTION("a bad GSO header is the guest's lost frame, not a device failure") {
    NetHdr h{};
    h.gso_type = 0x33;  // no such GSO type
    h.gso_size = 1;
    REQUIRE(e.mem->WriteObj(GuestAddress(buf), h).ok());
    std::vector<uint8_t> f = NetEnv::Frame(5, 100);
    REQUIRE(e.mem->Write(GuestAddress(buf + 12), f).ok());
    e.tx.AddChain({{buf, static_cast<uint32_t>(12 + f.size()), false}});
    REQUIRE(e.Process(Net::kTxQueue).ok());
    REQUIRE(e.tx.used_idx() == 1);
    REQUIRE(e.net->stats().tx_dropped == 1);
  }
}

TEST_CASE("virtio-net: one call serves at most a queue's worth of tx chains") {
  NetEnv e;
  if (!e.Open()) KINDLING_SKIP(e.skip_reason);
  int again = 0;
  ActivateContext ctx{e.mem.get(), e.queues, &e.irq, Bit(kFVersion1), [&](uint16_t) { ++again; }};
  e.loop.RunSync([&] { REQUIRE(e.net->Activate(ctx).ok()); });
  uint64_t buf = e.tx.scratch().value;
  REQUIRE(e.mem->WriteObj(GuestAddress(buf), NetHdr{}).ok());
  std::vector<uint8_t> f = NetEnv::Frame(6, 50);
  REQUIRE(e.mem->Write(GuestAddress(buf + 12), f).ok());
  for (int i = 0; i < 16; ++i) e.tx.AddChain({{buf, static_cast<uint32_t>(12 + f.size()), false}});
  REQUIRE(e.Process(Net::kTxQueue).ok());
  REQUIRE(e.tx.used_idx() == 16);
  REQUIRE(again == 1);
  REQUIRE(e.net->stats().tx_frames == 16);
}

}  // namespace
}  // namespace virtio
