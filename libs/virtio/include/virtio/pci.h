// PciTransport: a virtio device as a modern virtio-pci function (virtio
// 1.2, 4.1): vendor 0x1af4, device 0x1040 + type, one 32 KiB memory BAR
// holding the common, ISR, device and notification structures and the
// MSI-X table and PBA; interrupts are MSI-X only (no INTx).
//
//   auto t = std::make_shared<PciTransport>(device, mem, loop, options);
//   ASSIGN_OR_RETURN(uint8_t slot, pci_bus.Add(t));
//   // options.on_bar_change maps t->bar() at the BAR's address (and moves
//   // ioeventfds) whenever the guest moves the BAR or toggles decoding.
#ifndef VIRTIO_PCI_H_
#define VIRTIO_PCI_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "vcpu/bus.h"
#include "virtio/pci_bus.h"
#include "virtio/transport.h"

namespace virtio {

// BAR 0 layout.
inline constexpr uint64_t kPciBarSize = 0x8000;
inline constexpr uint64_t kPciCommonOffset = 0x0000;
inline constexpr uint64_t kPciIsrOffset = 0x1000;
inline constexpr uint64_t kPciDeviceCfgOffset = 0x2000;
inline constexpr uint64_t kPciNotifyOffset = 0x3000;
inline constexpr uint32_t kPciNotifyMultiplier = 4;
inline constexpr uint64_t kPciMsixTableOffset = 0x4000;
inline constexpr uint64_t kPciMsixPbaOffset = 0x5000;
inline constexpr uint16_t kMsixNoVector = 0xffff;
// The MSI-X capability in configuration space (its control word at +2).
inline constexpr uint32_t kPciMsixCapOffset = 0x98;

struct PciTransportOptions {
  uint32_t bar_address = 0;  // where the VMM places BAR 0 (firmware's job)
  // Delivers MSI-X vector `vector`'s message (address, data), from any
  // thread.
  std::function<void(uint16_t vector, uint64_t address, uint32_t data)> send_msi;
  // BAR 0 is now decoded at `address` (nullopt: not decoded). Called on
  // the vCPU thread that wrote the command register or the BAR.
  std::function<void(std::optional<uint64_t> address)> on_bar_change;
};

// The transport's state plus the function's: configuration space (BAR,
// command register, MSI-X control, the pci_cfg window), the MSI-X table,
// vectors and the common configuration's selectors.
struct PciMsixEntryState {
  uint64_t address = 0;
  uint32_t data = 0;
  bool masked = true;
  bool pending = false;
};
struct PciState {
  TransportState transport;
  std::vector<uint8_t> config;  // 256 bytes; only guest-writable bits are loaded
  std::vector<PciMsixEntryState> msix;  // one entry per queue plus one
  std::vector<uint16_t> queue_vectors;  // per queue; 0xffff: none
  uint16_t config_vector = 0xffff;
  uint32_t isr = 0;
  uint32_t device_features_sel = 0;
  uint32_t driver_features_sel = 0;
  uint16_t queue_sel = 0;
};

class PciTransport : public Transport, public PciDevice, private Interrupt {
 public:
  PciTransport(std::shared_ptr<VirtioDevice> device, vm_memory::GuestMemory& memory,
               EventLoop& loop, PciTransportOptions options);

  // PCI configuration space.
  void ReadConfig(uint32_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint32_t offset, std::span<const uint8_t> data) override;
  // BAR 0's contents, to be mapped where on_bar_change says.
  std::shared_ptr<vcpu::BusDevice> bar() { return bar_; }
  std::optional<uint64_t> bar_mapping() const;
  uint16_t msix_vectors() const { return static_cast<uint16_t>(msix_.size()); }
  // Snapshots (Transport::SaveState / RestoreState's rules and threads). A
  // restore maps the BAR where the saved configuration space puts it.
  PciState SavePciState();
  absl::Status RestorePciState(const PciState& state);

  // BAR 0 accesses (offset within the BAR), from vCPU threads.
  void BarRead(uint64_t offset, std::span<uint8_t> data);
  void BarWrite(uint64_t offset, std::span<const uint8_t> data);

 private:
  struct MsixEntry {
    uint64_t address = 0;
    uint32_t data = 0;
    bool masked = true;
    bool pending = false;
  };

  Interrupt& interrupt() override { return *this; }
  void OnReset() override;
  void SignalQueue(uint16_t queue) override;
  void SignalConfig() override;
  void Signal(uint16_t vector);
  void BuildConfigSpace() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cfg_mu_);
  void UpdateBarMapping() ABSL_EXCLUSIVE_LOCKS_REQUIRED(cfg_mu_);
  void CommonRead(uint64_t offset, std::span<uint8_t> data);
  void CommonWrite(uint64_t offset, std::span<const uint8_t> data);
  void MsixRead(uint64_t offset, std::span<uint8_t> data);
  void MsixWrite(uint64_t offset, std::span<const uint8_t> data);
  void PciCfgAccess(bool write);
  absl::Status RestoreMsix(const PciState& state);

  PciTransportOptions options_;
  std::shared_ptr<vcpu::BusDevice> bar_;

  mutable absl::Mutex cfg_mu_;
  std::array<uint8_t, 256> cfg_ ABSL_GUARDED_BY(cfg_mu_) = {};
  std::array<uint8_t, 256> wmask_ ABSL_GUARDED_BY(cfg_mu_) = {};
  std::optional<uint64_t> mapped_ ABSL_GUARDED_BY(cfg_mu_);

  absl::Mutex msix_mu_;
  std::vector<MsixEntry> msix_ ABSL_GUARDED_BY(msix_mu_);
  bool msix_enabled_ ABSL_GUARDED_BY(msix_mu_) = false;
  bool msix_function_mask_ ABSL_GUARDED_BY(msix_mu_) = false;
  std::vector<uint16_t> queue_vector_ ABSL_GUARDED_BY(msix_mu_);
  uint16_t config_vector_ ABSL_GUARDED_BY(msix_mu_) = kMsixNoVector;

  std::atomic<uint32_t> isr_{0};
  std::atomic<uint32_t> device_features_sel_{0};
  std::atomic<uint32_t> driver_features_sel_{0};
  std::atomic<uint16_t> queue_sel_{0};
};

}  // namespace virtio

#endif  // VIRTIO_PCI_H_
