// Firmware tables that tell a guest which CPUs and interrupt controllers it
// has: the Intel MP table and ACPI (RSDP, XSDT, FADT, MADT, DSDT, and MCFG
// plus a PCI host bridge in the DSDT when there is a PCI bus).
//
//   PlatformConfig cfg{.num_cpus = 4};
//   RETURN_IF_ERROR(WriteMpTable(mem, cfg));
//   ASSIGN_OR_RETURN(uint64_t rsdp, WriteAcpiTables(mem, cfg));
//
// Devices that must appear in the DSDT (virtio-mmio, LNRO0005) are passed
// as `dsdt_devices`; each becomes a Device with a memory and IRQ resource.
#ifndef VCPU_BOOT_PLATFORM_TABLES_H_
#define VCPU_BOOT_PLATFORM_TABLES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vm-memory/guest_memory.h"

namespace vcpu::boot {

inline constexpr uint32_t kMaxCpus = 254;  // xAPIC IDs; 255 is broadcast

struct MmioDeviceDescription {
  std::string hid;  // e.g. "LNRO0005" for virtio-mmio
  uint64_t address = 0;
  uint32_t size = 0;
  uint32_t irq = 0;  // GSI
};

// A legacy port-I/O device announced in the DSDT as a PNP device, so a
// guest on a hardware-reduced ACPI platform (no legacy PIC enumeration)
// still finds it and its IRQ. E.g. COM1: {"COM1", "PNP0501", 0x3f8, 8, 4}.
struct IoDeviceDescription {
  std::string name;  // 4-character ACPI name
  std::string hid;   // EISA ID, e.g. "PNP0501"
  uint16_t port = 0;
  uint8_t port_len = 0;
  uint8_t irq = 0;
};

// Encodes an EISA ID ("PNP0501") the way ACPI's EisaId() does.
uint32_t EisaId(const std::string& id);

// PCI segment 0: its memory-mapped configuration space (ECAM), for MCFG,
// and the host bridge the DSDT declares (\_SB.PCI0, PNP0A08): an ACPI
// guest scans only the root buses the DSDT has, through the windows in
// their _CRS.
struct PciEcamDescription {
  uint64_t base = 0;
  uint8_t end_bus = 0;  // buses 0..end_bus, 1 MiB each
  // The 32-bit memory window the bridge forwards, where the BARs live.
  uint32_t mmio_base = 0;
  uint32_t mmio_size = 0;
};

// ACPI power management on the hardware-reduced platform: the power button
// (\_SB.PWRB, PNP0C0C) and a Generic Event Device (\_SB.GED0, ACPI0013)
// whose rising edge on GSI `ged_irq` runs its _EVT, Notify (PWRB, 0x80):
// "the power button was pressed". And the FADT's sleep control and status
// registers at I/O ports `sleep_port` and `sleep_port + 1` with \_S5
// (SLP_TYP 5), so the guest powers off by writing 5 << 2 | SLP_EN (0x20)
// to the control port (the AcpiSleep device in vcpu/devices/legacy.h).
struct AcpiPowerDescription {
  uint8_t ged_irq = 0;
  uint16_t sleep_port = 0;
};

struct PlatformConfig {
  uint32_t num_cpus = 1;
  // Whether the guest has an 8259 PIC (full in-kernel irqchip) — sets the
  // MADT PCAT_COMPAT flag and MP ExtINT routing.
  bool has_pic = true;
  std::vector<MmioDeviceDescription> dsdt_devices;
  std::vector<IoDeviceDescription> io_devices;
  std::optional<PciEcamDescription> pci_ecam;  // adds MCFG and \_SB.PCI0
  std::optional<AcpiPowerDescription> power;   // power button, S5
};

// Builds the ACPI tables at the RSDP/tables addresses in boot/layout.h and
// returns the RSDP's guest address.
absl::StatusOr<uint64_t> WriteAcpiTables(vm_memory::GuestMemory& mem,
                                         const PlatformConfig& config);
absl::Status WriteMpTable(vm_memory::GuestMemory& mem,
                          const PlatformConfig& config);

// The byte that makes `data` sum to zero (ACPI and MP checksums).
uint8_t ChecksumByte(const uint8_t* data, size_t len);

// The table bytes themselves (for tests and fuzzing); `base` is where the
// first table will live in guest memory.
std::vector<uint8_t> BuildMadt(const PlatformConfig& config);
std::vector<uint8_t> BuildDsdt(const PlatformConfig& config);
std::vector<uint8_t> BuildFadt(uint64_t dsdt, const PlatformConfig& config);

}  // namespace vcpu::boot

#endif  // VCPU_BOOT_PLATFORM_TABLES_H_
