#include "virtio/pci.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <map>

#include "libs/virtio/src/test_env.h"
#include "virtio/rng.h"

namespace virtio {
namespace {

struct PciEnv {
  PciEnv() : mem(test::MakeMemory()), loop("pci-test") {
    PciTransportOptions o;
    o.bar_address = 0xc0000000;
    o.send_msi = [this](uint16_t, uint64_t a, uint32_t d) { msis.push_back({a, d}); };
    o.on_bar_change = [this](std::optional<uint64_t> a) { bar_changes.push_back(a); };
    t = std::make_shared<PciTransport>(std::make_shared<Rng>(), *mem, loop, o);
    slot = bus.Add(t).value();
  }
  uint32_t Cfg(uint32_t off, size_t n = 4) {
    uint32_t v = 0;
    bus.Read(slot, 0, off, {reinterpret_cast<uint8_t*>(&v), n});
    return v;
  }
  void SetCfg(uint32_t off, uint32_t v, size_t n = 4) {
    bus.Write(slot, 0, off, {reinterpret_cast<const uint8_t*>(&v), n});
  }
  uint64_t Bar(uint64_t off, size_t n = 4) {
    uint64_t v = 0;
    t->BarRead(off, {reinterpret_cast<uint8_t*>(&v), n});
    return v;
  }
  void SetBar(uint64_t off, uint64_t v, size_t n = 4) {
    t->BarWrite(off, {reinterpret_cast<const uint8_t*>(&v), n});
  }
  // Capabilities by cfg_type (vendor-specific) or 0x100 + id (others).
  std::map<uint32_t, uint32_t> Caps() {
    std::map<uint32_t, uint32_t> caps;
    for (uint32_t p = Cfg(0x34, 1), n = 0; p != 0 && n < 48; p = Cfg(p + 1, 1), ++n) {
      uint32_t id = Cfg(p, 1);
      caps[id == 0x09 ? Cfg(p + 3, 1) : 0x100 + id] = p;
    }
    return caps;
  }
  void Bringup(testing::MockDriver& drv) {
    SetBar(0x14, 0, 1);
    SetBar(0x14, kStatusAcknowledge | kStatusDriver, 1);
    SetBar(0x08, 1);
    SetBar(0x0c, 1);  // VERSION_1
    SetBar(0x14, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk, 1);
    SetBar(0x16, 0, 2);
    SetBar(0x18, 16, 2);
    SetBar(0x1a, 1, 2);  // queue 0 -> MSI-X vector 1
    SetBar(0x20, drv.desc_table().value, 8);
    SetBar(0x28, drv.avail_ring().value, 8);
    SetBar(0x30, drv.used_ring().value, 8);
    SetBar(0x1c, 1, 2);
    SetBar(0x14, 15, 1);
  }

  std::unique_ptr<vm_memory::GuestMemory> mem;
  EventLoop loop;
  PciBus bus;
  std::shared_ptr<PciTransport> t;
  uint8_t slot = 0;
  std::vector<std::pair<uint64_t, uint32_t>> msis;
  std::vector<std::optional<uint64_t>> bar_changes;
};

TEST_CASE("pci: identity, capabilities and an empty slot") {
  PciEnv env;
  REQUIRE(env.slot == 1);
  REQUIRE(env.Cfg(0x00) == (0x1044u << 16 | 0x1af4));  // rng
  REQUIRE(env.Cfg(0x08, 1) == 1);
  REQUIRE((env.Cfg(0x06, 2) & 0x10) != 0);
  auto caps = env.Caps();
  for (uint32_t type : {1, 2, 3, 4, 5}) REQUIRE(caps.count(type) == 1);
  REQUIRE(caps.count(0x111) == 1);  // MSI-X
  REQUIRE((env.Cfg(caps[0x111] + 2, 2) & 0x7ff) == 1);  // 2 vectors: config + 1 queue
  REQUIRE(env.Cfg(caps[2] + 16) == kPciNotifyMultiplier);
  uint32_t none = 0;
  env.bus.Read(7, 0, 0, {reinterpret_cast<uint8_t*>(&none), 4});
  REQUIRE(none == 0xffffffff);
  env.bus.Read(env.slot, 1, 0, {reinterpret_cast<uint8_t*>(&none), 4});
  REQUIRE(none == 0xffffffff);  // function 1
}

TEST_CASE("pci: configuration mechanism 1 reaches the devices") {
  PciEnv env;
  auto io = env.bus.config_io();
  uint32_t addr = 0x80000000u | (uint32_t{env.slot} << 11);
  io->Write(0, {reinterpret_cast<const uint8_t*>(&addr), 4});
  uint16_t vendor = 0;
  io->Read(4, {reinterpret_cast<uint8_t*>(&vendor), 2});
  REQUIRE(vendor == 0x1af4);
  uint16_t dev = 0;
  io->Read(6, {reinterpret_cast<uint8_t*>(&dev), 2});  // 0xcfe: upper half
  REQUIRE(dev == 0x1044);
  addr = 0x80000000u;  // 00:00.0, the host bridge
  io->Write(0, {reinterpret_cast<const uint8_t*>(&addr), 4});
  uint32_t id = 0;
  io->Read(4, {reinterpret_cast<uint8_t*>(&id), 4});
  REQUIRE(id == 0x0d578086);
  addr = 0x80010000u;  // bus 1: nothing
  io->Write(0, {reinterpret_cast<const uint8_t*>(&addr), 4});
  io->Read(4, {reinterpret_cast<uint8_t*>(&id), 4});
  REQUIRE(id == 0xffffffff);
  uint32_t ecam_id = 0;
  env.bus.ecam()->Read(uint64_t{env.slot} << 15, {reinterpret_cast<uint8_t*>(&ecam_id), 4});
  REQUIRE(ecam_id == (0x1044u << 16 | 0x1af4));
}

TEST_CASE("pci: BAR sizing, decoding and moving") {
  PciEnv env;
  REQUIRE(env.Cfg(0x10) == 0xc0000000);
  env.SetCfg(0x10, 0xffffffff);
  REQUIRE(env.Cfg(0x10) == static_cast<uint32_t>(~(kPciBarSize - 1)));
  env.SetCfg(0x10, 0xc0000000);
  REQUIRE(env.bar_changes.empty());  // decoding still off
  env.SetCfg(0x04, 0x6, 2);          // memory + bus master
  REQUIRE(env.bar_changes.size() == 1);
  REQUIRE(env.bar_changes.back() == 0xc0000000);
  env.SetCfg(0x10, 0xc0100000);
  REQUIRE(env.bar_changes.back() == 0xc0100000);
  env.SetCfg(0x04, 0x0, 2);
  REQUIRE(env.bar_changes.back() == std::nullopt);
  REQUIRE(env.t->bar_mapping() == std::nullopt);
}

TEST_CASE("pci: a request completes with an MSI-X message; masked vectors pend") {
  PciEnv env;
  auto caps = env.Caps();
  uint32_t msix = caps[0x111];
  env.SetCfg(msix + 2, 0x8000, 2);  // MSI-X enable
  env.SetBar(kPciMsixTableOffset + 16, 0xfee00000);  // vector 1
  env.SetBar(kPciMsixTableOffset + 24, 0x41);
  env.SetBar(kPciMsixTableOffset + 28, 1);  // masked for now
  testing::MockDriver drv(*env.mem, GuestAddress(0x10000), 16);
  env.Bringup(drv);
  REQUIRE(env.Bar(0x14, 1) == 15);
  REQUIRE(env.Bar(0x1a, 2) == 1);
  drv.AddChain({{drv.scratch().value, 32, true}});
  env.SetBar(kPciNotifyOffset + 0, 0, 2);
  env.loop.RunSync([] {});
  REQUIRE(drv.used_idx() == 1);
  REQUIRE(env.msis.empty());
  REQUIRE(env.Bar(kPciMsixPbaOffset, 1) == 2);  // vector 1 pending
  env.SetBar(kPciMsixTableOffset + 28, 0);       // unmask
  REQUIRE(env.msis.size() == 1);
  REQUIRE(env.msis[0] == std::make_pair(uint64_t{0xfee00000}, uint32_t{0x41}));
  REQUIRE(env.Bar(kPciMsixPbaOffset, 1) == 0);
  REQUIRE(env.Bar(kPciIsrOffset, 1) == 1);
  REQUIRE(env.Bar(kPciIsrOffset, 1) == 0);  // read clears
}

TEST_CASE("pci: out-of-range vectors read back as NO_VECTOR; queue fields lock at DRIVER_OK") {
  PciEnv env;
  env.SetBar(0x10, 9, 2);
  REQUIRE(env.Bar(0x10, 2) == kMsixNoVector);
  env.SetBar(0x16, 5, 2);  // no queue 5
  REQUIRE(env.Bar(0x18, 2) == 0);
  testing::MockDriver drv(*env.mem, GuestAddress(0x10000), 16);
  env.Bringup(drv);
  env.SetBar(0x16, 0, 2);
  env.SetBar(0x18, 4, 2);
  REQUIRE(env.Bar(0x18, 2) == 16);
}

TEST_CASE("pci: the PCI-config access capability reads BAR 0") {
  PciEnv env;
  uint32_t cap = env.Caps()[5];
  env.SetCfg(cap + 4, 0, 1);        // BAR 0
  env.SetCfg(cap + 8, 0x12);        // num_queues
  env.SetCfg(cap + 12, 2);          // 2 bytes
  REQUIRE((env.Cfg(cap + 16) & 0xffff) == 1);
}

TEST_CASE("pci state: BAR, MSI-X and queues come back; read-only bits stay ours") {
  PciEnv a;
  uint32_t msix = a.Caps()[0x111];
  a.SetCfg(0x10, 0xc0100000);
  a.SetCfg(0x04, 0x6, 2);
  a.SetCfg(msix + 2, 0x8000, 2);
  a.SetBar(kPciMsixTableOffset + 16, 0xfee00000);
  a.SetBar(kPciMsixTableOffset + 24, 0x42);
  a.SetBar(kPciMsixTableOffset + 28, 0);
  testing::MockDriver drv(*a.mem, GuestAddress(0x10000), 16);
  a.Bringup(drv);
  drv.AddChain({{drv.scratch().value, 32, true}});
  a.SetBar(kPciNotifyOffset, 0, 2);
  a.loop.RunSync([] {});
  REQUIRE(drv.used_idx() == 1);
  PciState saved;
  {
    auto hold = a.loop.Hold([&] { return a.t->Quiesce(); }, absl::Seconds(5));
    REQUIRE(hold.ok());
    saved = a.t->SavePciState();
  }
  saved.config[0] = 0xad;  // vendor ID: read-only, must not load
  PciEnv b;
  b.mem = std::move(a.mem);
  PciTransportOptions o;
  o.bar_address = 0xc0000000;
  o.send_msi = [&b](uint16_t, uint64_t ad, uint32_t d) { b.msis.push_back({ad, d}); };
  o.on_bar_change = [&b](std::optional<uint64_t> ad) { b.bar_changes.push_back(ad); };
  b.t = std::make_shared<PciTransport>(std::make_shared<Rng>(), *b.mem, b.loop, o);
  b.slot = b.bus.Add(b.t).value();
  absl::Status st;
  b.loop.RunSync([&] { st = b.t->RestorePciState(saved); });
  REQUIRE(st.ok());
  REQUIRE(b.Cfg(0x00) == (0x1044u << 16 | 0x1af4));
  REQUIRE(b.Cfg(0x10) == 0xc0100000);
  REQUIRE(b.bar_changes.back() == 0xc0100000);
  REQUIRE(b.t->bar_mapping() == 0xc0100000);
  REQUIRE(b.Bar(0x14, 1) == 15);
  drv.AddChain({{drv.scratch().value, 16, true}});
  b.SetBar(kPciNotifyOffset, 0, 2);
  b.loop.RunSync([] {});
  REQUIRE(drv.used_idx() == 2);
  REQUIRE(!b.msis.empty());
  REQUIRE(b.msis.back() == std::make_pair(uint64_t{0xfee00000}, uint32_t{0x42}));

  PciState bad = saved;
  bad.queue_vectors[0] = 7;
  b.loop.RunSync([&] { st = b.t->RestorePciState(bad); });
  REQUIRE_THAT(std::string(st.message()), Catch::Contains("vector 7 of queue 0"));
  bad = saved;
  bad.config.resize(64);
  b.loop.RunSync([&] { st = b.t->RestorePciState(bad); });
  REQUIRE_THAT(std::string(st.message()), Catch::Contains("configuration space of 64 bytes"));
  bad = saved;
  bad.msix.pop_back();
  b.loop.RunSync([&] { st = b.t->RestorePciState(bad); });
  REQUIRE_THAT(std::string(st.message()), Catch::Contains("MSI-X: 1 entries"));
}

}  // namespace
}  // namespace virtio
