#include "virtio/pci.h"

#include <cstring>

namespace virtio {
namespace {

constexpr uint16_t kVendorVirtio = 0x1af4;
constexpr uint16_t kCommandMemory = 1 << 1;
// Capability offsets in configuration space.
constexpr uint32_t kCapCommon = 0x40, kCapIsr = 0x50, kCapDevice = 0x60, kCapNotify = 0x70,
                   kCapPciCfg = 0x84, kCapMsix = kPciMsixCapOffset;
constexpr uint8_t kCfgCommon = 1, kCfgNotify = 2, kCfgIsr = 3, kCfgDevice = 4, kCfgPci = 5;
constexpr uint32_t kCommonCfgSize = 0x3c;

uint32_t ClassCode(DeviceType t) {
  switch (t) {
    case DeviceType::kNet: return 0x020000;    // ethernet
    case DeviceType::kBlock: return 0x018000;  // mass storage, other
    case DeviceType::kConsole: return 0x078000;  // communication, other
    default: return 0xff0000;                  // unclassified
  }
}

class Bar : public vcpu::BusDevice {
 public:
  explicit Bar(PciTransport* t) : t_(t) {}
  void Read(uint64_t offset, std::span<uint8_t> data) override { t_->BarRead(offset, data); }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    t_->BarWrite(offset, data);
  }

 private:
  PciTransport* t_;
};

template <typename T>
void Put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}
template <typename T>
T Get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Does the access [off, off+n) touch [field, field+len)?
bool Touches(uint64_t off, size_t n, uint64_t field, size_t len) {
  return off < field + len && field < off + n;
}

}  // namespace

PciTransport::PciTransport(std::shared_ptr<VirtioDevice> device, vm_memory::GuestMemory& memory,
                           EventLoop& loop, PciTransportOptions options)
    : Transport(std::move(device), memory, loop),
      options_(std::move(options)),
      bar_(std::make_shared<Bar>(this)) {
  {
    absl::MutexLock l(&msix_mu_);
    msix_.resize(num_queues() + 1);
    queue_vector_.assign(num_queues(), kMsixNoVector);
  }
  absl::MutexLock c(&cfg_mu_);
  BuildConfigSpace();
}

void PciTransport::BuildConfigSpace() {
  uint8_t* c = cfg_.data();
  uint8_t* w = wmask_.data();
  Put<uint16_t>(c + 0x00, kVendorVirtio);
  Put<uint16_t>(c + 0x02, 0x1040 + static_cast<uint16_t>(device().type()));
  Put<uint16_t>(w + 0x04, 0x0406);  // memory space, bus master, INTx disable
  Put<uint16_t>(c + 0x06, 0x0010);  // capabilities list
  c[0x08] = 1;                      // revision: modern
  uint32_t cls = ClassCode(device().type());
  c[0x09] = cls & 0xff;
  c[0x0a] = (cls >> 8) & 0xff;
  c[0x0b] = (cls >> 16) & 0xff;
  Put<uint32_t>(c + 0x10, options_.bar_address);  // 32-bit memory BAR
  Put<uint32_t>(w + 0x10, static_cast<uint32_t>(~(kPciBarSize - 1)));
  Put<uint16_t>(c + 0x2c, kVendorVirtio);
  Put<uint16_t>(c + 0x2e, 0x1100);
  c[0x34] = kCapCommon;
  w[0x3c] = 0xff;  // interrupt line (scratch for the guest)
  auto vcap = [&](uint32_t at, uint8_t next, uint8_t len, uint8_t type, uint32_t off,
                  uint32_t size) {
    c[at] = 0x09;  // vendor-specific
    c[at + 1] = next;
    c[at + 2] = len;
    c[at + 3] = type;
    c[at + 4] = 0;  // BAR 0
    Put<uint32_t>(c + at + 8, off);
    Put<uint32_t>(c + at + 12, size);
  };
  vcap(kCapCommon, kCapIsr, 16, kCfgCommon, kPciCommonOffset, kCommonCfgSize);
  vcap(kCapIsr, kCapDevice, 16, kCfgIsr, kPciIsrOffset, 1);
  vcap(kCapDevice, kCapNotify, 16, kCfgDevice, kPciDeviceCfgOffset, 0x1000);
  vcap(kCapNotify, kCapPciCfg, 20, kCfgNotify, kPciNotifyOffset, 0x1000);
  Put<uint32_t>(c + kCapNotify + 16, kPciNotifyMultiplier);
  vcap(kCapPciCfg, kCapMsix, 20, kCfgPci, 0, 0);
  w[kCapPciCfg + 4] = 0xff;                               // bar
  Put<uint32_t>(w + kCapPciCfg + 8, 0xffffffff);         // offset
  Put<uint32_t>(w + kCapPciCfg + 12, 0xffffffff);        // length
  Put<uint32_t>(w + kCapPciCfg + 16, 0xffffffff);        // pci_cfg_data
  c[kCapMsix] = 0x11;
  c[kCapMsix + 1] = 0;
  Put<uint16_t>(c + kCapMsix + 2, static_cast<uint16_t>(num_queues()));  // table size - 1
  Put<uint16_t>(w + kCapMsix + 2, 0xc000);  // enable, function mask
  Put<uint32_t>(c + kCapMsix + 4, kPciMsixTableOffset);  // BIR 0
  Put<uint32_t>(c + kCapMsix + 8, kPciMsixPbaOffset);
}

std::optional<uint64_t> PciTransport::bar_mapping() const {
  absl::MutexLock l(&cfg_mu_);
  return mapped_;
}

void PciTransport::ReadConfig(uint32_t offset, std::span<uint8_t> data) {
  if (Touches(offset, data.size(), kCapPciCfg + 16, 4)) PciCfgAccess(false);
  absl::MutexLock l(&cfg_mu_);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < cfg_.size() ? cfg_[offset + i] : 0;
  }
}

void PciTransport::WriteConfig(uint32_t offset, std::span<const uint8_t> data) {
  {
    absl::MutexLock l(&cfg_mu_);
    for (size_t i = 0; i < data.size() && offset + i < cfg_.size(); ++i) {
      uint8_t m = wmask_[offset + i];
      cfg_[offset + i] = (cfg_[offset + i] & ~m) | (data[i] & m);
    }
    if (Touches(offset, data.size(), 0x04, 2) || Touches(offset, data.size(), 0x10, 4)) {
      UpdateBarMapping();
    }
    if (Touches(offset, data.size(), kCapMsix + 2, 2)) {
      uint16_t ctl = Get<uint16_t>(&cfg_[kCapMsix + 2]);
      absl::MutexLock m(&msix_mu_);
      msix_enabled_ = ctl & 0x8000;
      msix_function_mask_ = ctl & 0x4000;
    }
  }
  if (Touches(offset, data.size(), kCapPciCfg + 16, 4)) PciCfgAccess(true);
  // Unmasking may release pending vectors.
  for (uint16_t v = 0; v < msix_vectors(); ++v) {
    bool fire = false;
    {
      absl::MutexLock m(&msix_mu_);
      MsixEntry& e = msix_[v];
      if (e.pending && msix_enabled_ && !msix_function_mask_ && !e.masked) {
        e.pending = false;
        fire = true;
      }
    }
    if (fire) Signal(v);
  }
}

void PciTransport::UpdateBarMapping() {
  bool decode = Get<uint16_t>(&cfg_[0x04]) & kCommandMemory;
  uint32_t bar = Get<uint32_t>(&cfg_[0x10]) & ~0xfu;
  std::optional<uint64_t> want;
  // A BAR of all ones (sizing) or zero is not a place to decode at.
  if (decode && bar != 0 && bar != static_cast<uint32_t>(~(kPciBarSize - 1))) want = bar;
  if (want == mapped_) return;
  mapped_ = want;
  if (options_.on_bar_change) options_.on_bar_change(want);
}

// VIRTIO_PCI_CAP_PCI_CFG: a window into BAR 0 through config space.
void PciTransport::PciCfgAccess(bool write) {
  uint8_t bar;
  uint32_t off, len;
  uint8_t buf[4];
  {
    absl::MutexLock l(&cfg_mu_);
    bar = cfg_[kCapPciCfg + 4];
    off = Get<uint32_t>(&cfg_[kCapPciCfg + 8]);
    len = Get<uint32_t>(&cfg_[kCapPciCfg + 12]);
    std::memcpy(buf, &cfg_[kCapPciCfg + 16], 4);
  }
  if (bar != 0 || (len != 1 && len != 2 && len != 4) || off % len != 0 ||
      off >= kPciBarSize) {
    return;
  }
  if (write) {
    BarWrite(off, {buf, len});
    return;
  }
  BarRead(off, {buf, len});
  absl::MutexLock l(&cfg_mu_);
  std::memcpy(&cfg_[kCapPciCfg + 16], buf, len);
}

void PciTransport::BarRead(uint64_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (offset < kPciIsrOffset) {
    CommonRead(offset, data);
  } else if (offset == kPciIsrOffset) {
    data[0] = static_cast<uint8_t>(isr_.exchange(0));  // read clears
  } else if (offset >= kPciDeviceCfgOffset && offset < kPciNotifyOffset) {
    device().ReadConfig(offset - kPciDeviceCfgOffset, data);
  } else if (offset >= kPciMsixTableOffset && offset < kPciMsixPbaOffset + 0x1000) {
    MsixRead(offset, data);
  }
}

void PciTransport::BarWrite(uint64_t offset, std::span<const uint8_t> data) {
  if (offset < kPciIsrOffset) {
    CommonWrite(offset, data);
  } else if (offset >= kPciDeviceCfgOffset && offset < kPciNotifyOffset) {
    device().WriteConfig(offset - kPciDeviceCfgOffset, data);
  } else if (offset >= kPciNotifyOffset && offset < kPciMsixTableOffset) {
    uint64_t q = (offset - kPciNotifyOffset) / kPciNotifyMultiplier;
    if (q < num_queues()) Notify(static_cast<uint16_t>(q));
  } else if (offset >= kPciMsixTableOffset && offset < kPciMsixPbaOffset) {
    MsixWrite(offset, data);
  }
}

// ---- common configuration (struct virtio_pci_common_cfg) ----

void PciTransport::CommonRead(uint64_t offset, std::span<uint8_t> data) {
  uint8_t c[kCommonCfgSize] = {};
  uint16_t sel = queue_sel_.load();
  Queue* q = queue(sel);
  Put<uint32_t>(c + 0x00, device_features_sel_.load());
  Put<uint32_t>(c + 0x04, DeviceFeatures(device_features_sel_.load()));
  uint32_t dsel = driver_features_sel_.load();
  Put<uint32_t>(c + 0x08, dsel);
  Put<uint32_t>(c + 0x0c, dsel > 1 ? 0 : static_cast<uint32_t>(driver_features() >> (32 * dsel)));
  {
    absl::MutexLock m(&msix_mu_);
    Put<uint16_t>(c + 0x10, config_vector_);
    Put<uint16_t>(c + 0x1a, q ? queue_vector_[sel] : kMsixNoVector);
  }
  Put<uint16_t>(c + 0x12, num_queues());
  c[0x14] = static_cast<uint8_t>(status());
  c[0x15] = config_generation();
  Put<uint16_t>(c + 0x16, sel);
  if (q) {
    Put<uint16_t>(c + 0x18, q->size());
    Put<uint16_t>(c + 0x1c, q->ready());
    Put<uint16_t>(c + 0x1e, sel);  // queue_notify_off
    Put<uint64_t>(c + 0x20, q->desc_table().value);
    Put<uint64_t>(c + 0x28, q->avail_ring().value);
    Put<uint64_t>(c + 0x30, q->used_ring().value);
  }
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < kCommonCfgSize ? c[offset + i] : 0;
  }
}

void PciTransport::CommonWrite(uint64_t offset, std::span<const uint8_t> data) {
  if (offset + data.size() > kCommonCfgSize) return;
  uint8_t c[kCommonCfgSize];
  CommonRead(0, c);
  std::memcpy(c + offset, data.data(), data.size());
  size_t n = data.size();
  auto touched = [&](uint64_t field, size_t len) { return Touches(offset, n, field, len); };
  uint16_t vectors = msix_vectors();
  auto vector = [&](uint16_t v) { return v < vectors ? v : kMsixNoVector; };
  if (touched(0x00, 4)) device_features_sel_.store(Get<uint32_t>(c + 0x00));
  if (touched(0x08, 4)) driver_features_sel_.store(Get<uint32_t>(c + 0x08));
  if (touched(0x0c, 4)) SetDriverFeatures(driver_features_sel_.load(), Get<uint32_t>(c + 0x0c));
  if (touched(0x10, 2)) {
    absl::MutexLock m(&msix_mu_);
    config_vector_ = vector(Get<uint16_t>(c + 0x10));
  }
  if (touched(0x16, 2)) queue_sel_.store(Get<uint16_t>(c + 0x16));
  uint16_t sel = queue_sel_.load();
  Queue* q = queue(sel);
  if (q && touched(0x1a, 2)) {
    absl::MutexLock m(&msix_mu_);
    queue_vector_[sel] = vector(Get<uint16_t>(c + 0x1a));
  }
  // The queue's layout is fixed once the driver is running.
  if (q && !driver_ok()) {
    if (touched(0x18, 2)) q->set_size(Get<uint16_t>(c + 0x18));
    if (touched(0x1c, 2)) q->set_ready(Get<uint16_t>(c + 0x1c) == 1);
    if (touched(0x20, 8)) q->set_desc_table(GuestAddress(Get<uint64_t>(c + 0x20)));
    if (touched(0x28, 8)) q->set_avail_ring(GuestAddress(Get<uint64_t>(c + 0x28)));
    if (touched(0x30, 8)) q->set_used_ring(GuestAddress(Get<uint64_t>(c + 0x30)));
  }
  if (touched(0x14, 1)) WriteStatus(c[0x14]);
}

// ---- MSI-X ----

void PciTransport::MsixRead(uint64_t offset, std::span<uint8_t> data) {
  absl::MutexLock m(&msix_mu_);
  if (offset >= kPciMsixPbaOffset) {
    uint64_t bits = 0;
    for (size_t v = 0; v < msix_.size() && v < 64; ++v) bits |= uint64_t{msix_[v].pending} << v;
    uint64_t at = offset - kPciMsixPbaOffset;
    for (size_t i = 0; i < data.size(); ++i) {
      data[i] = at + i < 8 ? (bits >> (8 * (at + i))) & 0xff : 0;
    }
    return;
  }
  uint64_t at = offset - kPciMsixTableOffset;
  uint64_t v = at / 16;
  if (v >= msix_.size() || (at % 16) + data.size() > 16) return;
  uint8_t e[16];
  Put<uint64_t>(e, msix_[v].address);
  Put<uint32_t>(e + 8, msix_[v].data);
  Put<uint32_t>(e + 12, msix_[v].masked ? 1 : 0);
  std::memcpy(data.data(), e + at % 16, data.size());
}

void PciTransport::MsixWrite(uint64_t offset, std::span<const uint8_t> data) {
  uint64_t at = offset - kPciMsixTableOffset;
  uint64_t v = at / 16;
  bool fire = false;
  {
    absl::MutexLock m(&msix_mu_);
    if (v >= msix_.size() || (at % 16) + data.size() > 16) return;
    MsixEntry& entry = msix_[v];
    uint8_t e[16];
    Put<uint64_t>(e, entry.address);
    Put<uint32_t>(e + 8, entry.data);
    Put<uint32_t>(e + 12, entry.masked ? 1 : 0);
    std::memcpy(e + at % 16, data.data(), data.size());
    entry.address = Get<uint64_t>(e);
    entry.data = Get<uint32_t>(e + 8);
    entry.masked = Get<uint32_t>(e + 12) & 1;
    if (!entry.masked && entry.pending && msix_enabled_ && !msix_function_mask_) {
      entry.pending = false;
      fire = true;
    }
  }
  if (fire) Signal(static_cast<uint16_t>(v));
}

void PciTransport::Signal(uint16_t vector) {
  uint64_t address;
  uint32_t data;
  {
    absl::MutexLock m(&msix_mu_);
    if (vector >= msix_.size() || !msix_enabled_) return;  // no INTx fallback
    MsixEntry& e = msix_[vector];
    if (msix_function_mask_ || e.masked) {
      e.pending = true;
      return;
    }
    address = e.address;
    data = e.data;
  }
  if (options_.send_msi) options_.send_msi(vector, address, data);
}

void PciTransport::SignalQueue(uint16_t queue) {
  isr_.fetch_or(1);
  uint16_t v;
  {
    absl::MutexLock m(&msix_mu_);
    v = queue < queue_vector_.size() ? queue_vector_[queue] : kMsixNoVector;
  }
  Signal(v);
}

void PciTransport::SignalConfig() {
  isr_.fetch_or(2);
  uint16_t v;
  {
    absl::MutexLock m(&msix_mu_);
    v = config_vector_;
  }
  Signal(v);
}

void PciTransport::OnReset() {
  isr_.store(0);
  absl::MutexLock m(&msix_mu_);
  config_vector_ = kMsixNoVector;
  queue_vector_.assign(queue_vector_.size(), kMsixNoVector);
  for (MsixEntry& e : msix_) e.pending = false;
}

}  // namespace virtio
