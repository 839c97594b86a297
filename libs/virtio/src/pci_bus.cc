#include "virtio/pci_bus.h"

#include <atomic>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace virtio {
namespace {

constexpr uint32_t kConfigSpaceSize = 4096;

bool ValidAccess(uint32_t offset, size_t size, uint32_t limit) {
  return (size == 1 || size == 2 || size == 4) && offset % size == 0 && offset + size <= limit;
}

// 00:00.0: a host bridge with nothing to configure.
class HostBridge : public PciDevice {
 public:
  void ReadConfig(uint32_t offset, std::span<uint8_t> data) override {
    uint8_t cfg[64] = {};
    auto put16 = [&](int at, uint16_t v) { std::memcpy(cfg + at, &v, 2); };
    put16(0x00, 0x8086);  // vendor: Intel
    put16(0x02, 0x0d57);  // device: a host bridge id guests know
    cfg[0x0b] = 0x06;     // class: bridge
    cfg[0x0a] = 0x00;     // subclass: host bridge
    for (size_t i = 0; i < data.size(); ++i) {
      data[i] = offset + i < sizeof(cfg) ? cfg[offset + i] : 0;
    }
  }
  void WriteConfig(uint32_t, std::span<const uint8_t>) override {}
};

// Ports 0xcf8 (address, 32-bit) and 0xcfc-0xcff (data).
class ConfigIo : public vcpu::BusDevice {
 public:
  explicit ConfigIo(PciBus& bus) : bus_(bus) {}
  void Read(uint64_t offset, std::span<uint8_t> data) override {
    if (offset == 0 && data.size() == 4) {
      uint32_t a = address_.load();
      std::memcpy(data.data(), &a, 4);
      return;
    }
    std::memset(data.data(), 0xff, data.size());
    if (offset < 4) return;
    uint32_t a = address_.load();
    if (!(a & 0x80000000u) || ((a >> 16) & 0xff) != 0) return;  // disabled, or not bus 0
    bus_.Read((a >> 11) & 0x1f, (a >> 8) & 7, (a & 0xfc) + (offset - 4), data);
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    if (offset == 0 && data.size() == 4) {
      uint32_t a;
      std::memcpy(&a, data.data(), 4);
      address_.store(a);
      return;
    }
    if (offset < 4) return;  // 0xcf9 (reset control) and odd accesses
    uint32_t a = address_.load();
    if (!(a & 0x80000000u) || ((a >> 16) & 0xff) != 0) return;
    bus_.Write((a >> 11) & 0x1f, (a >> 8) & 7, (a & 0xfc) + (offset - 4), data);
  }

 private:
  PciBus& bus_;
  std::atomic<uint32_t> address_{0};
};

// ECAM for bus 0: offset = device << 15 | function << 12 | register.
class Ecam : public vcpu::BusDevice {
 public:
  explicit Ecam(PciBus& bus) : bus_(bus) {}
  void Read(uint64_t offset, std::span<uint8_t> data) override {
    bus_.Read(offset >> 15, (offset >> 12) & 7, offset & 0xfff, data);
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    bus_.Write(offset >> 15, (offset >> 12) & 7, offset & 0xfff, data);
  }

 private:
  PciBus& bus_;
};

}  // namespace

PciBus::PciBus()
    : config_io_(std::make_shared<ConfigIo>(*this)), ecam_(std::make_shared<Ecam>(*this)) {
  slots_[0] = std::make_shared<HostBridge>();
}

absl::StatusOr<uint8_t> PciBus::Add(std::shared_ptr<PciDevice> device) {
  absl::MutexLock l(&mu_);
  for (int s = 1; s < kSlots; ++s) {
    if (!slots_[s]) {
      slots_[s] = std::move(device);
      return static_cast<uint8_t>(s);
    }
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("PCI bus 0 is full (", kSlots - 1, " devices)"));
}

std::shared_ptr<PciDevice> PciBus::Find(uint32_t dev, uint32_t fn) {
  if (dev >= kSlots || fn != 0) return nullptr;
  absl::MutexLock l(&mu_);
  return slots_[dev];
}

void PciBus::Read(uint32_t dev, uint32_t fn, uint32_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0xff, data.size());
  std::shared_ptr<PciDevice> d = Find(dev, fn);
  if (!d || !ValidAccess(offset, data.size(), kConfigSpaceSize)) return;
  d->ReadConfig(offset, data);
}

void PciBus::Write(uint32_t dev, uint32_t fn, uint32_t offset, std::span<const uint8_t> data) {
  std::shared_ptr<PciDevice> d = Find(dev, fn);
  if (!d || !ValidAccess(offset, data.size(), kConfigSpaceSize)) return;
  d->WriteConfig(offset, data);
}

}  // namespace virtio
