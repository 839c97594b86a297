// PciBus: PCI segment 0, bus 0 — a host bridge at 00:00.0 and up to 31
// devices, reachable through configuration mechanism 1 (ports 0xcf8 and
// 0xcfc-0xcff) and through ECAM (memory-mapped, announced in ACPI MCFG).
//
//   PciBus pci;
//   ASSIGN_OR_RETURN(uint8_t slot, pci.Add(transport));   // 00:<slot>.0
//   RETURN_IF_ERROR(pio.Insert(pci.config_io(), 0xcf8, 8));
//   RETURN_IF_ERROR(mmio.Insert(pci.ecam(), kEcamBase, kEcamSize));
//
// Functions other than 0 and empty slots read as all ones (no device).
#ifndef VIRTIO_PCI_BUS_H_
#define VIRTIO_PCI_BUS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "vcpu/bus.h"

namespace virtio {

// A PCI function's 4 KiB configuration space.
class PciDevice {
 public:
  virtual ~PciDevice() = default;
  // `offset` < 4096, offset + data.size() <= 4096, sizes 1, 2 or 4.
  virtual void ReadConfig(uint32_t offset, std::span<uint8_t> data) = 0;
  virtual void WriteConfig(uint32_t offset, std::span<const uint8_t> data) = 0;
};

inline constexpr uint64_t kPciConfigIoPort = 0xcf8;
inline constexpr uint64_t kPciConfigIoSize = 8;
inline constexpr uint64_t kPciEcamSizePerBus = 1 << 20;

class PciBus {
 public:
  static constexpr int kSlots = 32;

  PciBus();
  // Puts `device` in the lowest free slot (1..31) and returns the slot.
  absl::StatusOr<uint8_t> Add(std::shared_ptr<PciDevice> device);
  std::shared_ptr<vcpu::BusDevice> config_io() { return config_io_; }
  std::shared_ptr<vcpu::BusDevice> ecam() { return ecam_; }

  // Configuration access by (device, function, register offset).
  void Read(uint32_t dev, uint32_t fn, uint32_t offset, std::span<uint8_t> data);
  void Write(uint32_t dev, uint32_t fn, uint32_t offset, std::span<const uint8_t> data);

 private:
  std::shared_ptr<PciDevice> Find(uint32_t dev, uint32_t fn);

  absl::Mutex mu_;
  std::array<std::shared_ptr<PciDevice>, kSlots> slots_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<vcpu::BusDevice> config_io_;
  std::shared_ptr<vcpu::BusDevice> ecam_;
};

}  // namespace virtio

#endif  // VIRTIO_PCI_BUS_H_
