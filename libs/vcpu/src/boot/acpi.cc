// ACPI tables: RSDP (2.0) → XSDT → FADT (→ DSDT), MADT. The FADT declares a
// hardware-reduced platform (no PM timer, no SCI), with the i8042 reset
// port as the ACPI reset register so guests reboot through it.
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "vcpu/boot/layout.h"
#include "vcpu/boot/platform_tables.h"

namespace vcpu::boot {
namespace {

using vm_memory::GuestAddress;

constexpr char kOemId[] = "KINDLG";        // 6 bytes
constexpr char kOemTableId[] = "KINDLING";  // 8 bytes
constexpr uint32_t kFadtHwReducedAcpi = 1u << 20;
constexpr uint32_t kFadtResetRegSupported = 1u << 10;
constexpr uint16_t kBootArch8042 = 1u << 1;
constexpr uint16_t kBootArchVgaNotPresent = 1u << 2;

class Bytes {
 public:
  template <typename T>
  void Put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    data_.insert(data_.end(), p, p + sizeof(T));
  }
  void PutString(std::string_view s, size_t width) {
    for (size_t i = 0; i < width; ++i) data_.push_back(i < s.size() ? s[i] : ' ');
  }
  void PutBytes(const std::vector<uint8_t>& b) {
    data_.insert(data_.end(), b.begin(), b.end());
  }
  std::vector<uint8_t>& data() { return data_; }

 private:
  std::vector<uint8_t> data_;
};

// An SDT header with length and checksum fixed by Finish().
Bytes Header(const char* signature, uint8_t revision) {
  Bytes b;
  b.PutString(signature, 4);
  b.Put<uint32_t>(0);  // length
  b.Put<uint8_t>(revision);
  b.Put<uint8_t>(0);  // checksum
  b.PutString(kOemId, 6);
  b.PutString(kOemTableId, 8);
  b.Put<uint32_t>(1);  // OEM revision
  b.PutString("KNDL", 4);
  b.Put<uint32_t>(1);  // creator revision
  return b;
}

std::vector<uint8_t> Finish(Bytes b) {
  std::vector<uint8_t>& d = b.data();
  uint32_t len = d.size();
  std::memcpy(d.data() + 4, &len, 4);
  d[9] = ChecksumByte(d.data(), d.size());
  return d;
}

// A generic address structure (GAS) for a system I/O port.
void PutIoGas(Bytes& b, uint16_t port, uint8_t width_bits) {
  b.Put<uint8_t>(1);  // system I/O space
  b.Put<uint8_t>(width_bits);
  b.Put<uint8_t>(0);  // bit offset
  b.Put<uint8_t>(1);  // byte access
  b.Put<uint64_t>(port);
}

// FADT (ACPI 6.4, 5.2.9): revision 6, hardware-reduced.
std::vector<uint8_t> Fadt(uint64_t dsdt, const std::optional<AcpiPowerDescription>& power) {
  Bytes b = Header("FACP", 6);
  b.Put<uint32_t>(0);                         // 36 FIRMWARE_CTRL
  b.Put<uint32_t>(static_cast<uint32_t>(dsdt));  // 40 DSDT
  b.data().resize(109, 0);                    // legacy PM fields: unused
  b.Put<uint16_t>(kBootArch8042 | kBootArchVgaNotPresent);  // 109
  b.Put<uint8_t>(0);                          // 111 reserved
  b.Put<uint32_t>(kFadtHwReducedAcpi | kFadtResetRegSupported);  // 112 flags
  PutIoGas(b, 0x64, 8);                       // 116 RESET_REG: i8042 command
  b.Put<uint8_t>(0xfe);                       // 128 RESET_VALUE: pulse reset
  b.Put<uint16_t>(0);                         // 129 ARM_BOOT_ARCH
  b.Put<uint8_t>(0);                          // 131 minor version
  b.Put<uint64_t>(0);                         // 132 X_FIRMWARE_CTRL
  b.Put<uint64_t>(dsdt);                      // 140 X_DSDT
  b.data().resize(244, 0);                    // X_PM blocks: none
  if (power) {
    PutIoGas(b, power->sleep_port, 8);        // 244 SLEEP_CONTROL_REG
    PutIoGas(b, power->sleep_port + 1, 8);    // 256 SLEEP_STATUS_REG
  }
  b.data().resize(268, 0);
  b.PutString("KINDLING", 8);                 // 268 hypervisor vendor
  return Finish(std::move(b));
}

// AML package length: the length includes its own encoding bytes.
std::vector<uint8_t> PkgLength(size_t body) {
  if (body + 1 < 64) return {static_cast<uint8_t>(body + 1)};
  for (size_t extra = 1; extra <= 3; ++extra) {
    size_t total = body + 1 + extra;
    if (total < (1ULL << (4 + 8 * extra))) {
      std::vector<uint8_t> out;
      out.push_back(static_cast<uint8_t>((extra << 6) | (total & 0xf)));
      for (size_t i = 0; i < extra; ++i) out.push_back((total >> (4 + 8 * i)) & 0xff);
      return out;
    }
  }
  return {};  // unreachable for tables we build (< 256 MiB)
}

// An AML package: opcode bytes, PkgLength, then `content` (for Scope and
// Device the content starts with the name; PkgLength covers it).
std::vector<uint8_t> Package(std::vector<uint8_t> opcode,
                             const std::vector<uint8_t>& content) {
  std::vector<uint8_t> out = std::move(opcode);
  std::vector<uint8_t> len = PkgLength(content.size());
  out.insert(out.end(), len.begin(), len.end());
  out.insert(out.end(), content.begin(), content.end());
  return out;
}

std::vector<uint8_t> Concat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void Append(std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
}

std::vector<uint8_t> NameString(std::string_view name, std::string_view value) {
  std::vector<uint8_t> out = {0x08};  // NameOp
  out.insert(out.end(), name.begin(), name.end());
  out.push_back(0x0d);  // StringPrefix
  out.insert(out.end(), value.begin(), value.end());
  out.push_back(0);
  return out;
}

std::vector<uint8_t> NameDword(std::string_view name, uint32_t value) {
  std::vector<uint8_t> out = {0x08};
  out.insert(out.end(), name.begin(), name.end());
  out.push_back(0x0c);  // DWordPrefix
  for (int i = 0; i < 4; ++i) out.push_back((value >> (8 * i)) & 0xff);
  return out;
}

// Name (_CRS, ResourceTemplate () { resources }): `crs` ends with EndTag.
std::vector<uint8_t> NameCrs(const std::vector<uint8_t>& crs) {
  std::vector<uint8_t> buffer_body = {0x0a, static_cast<uint8_t>(crs.size())};
  Append(buffer_body, crs);
  std::vector<uint8_t> name_crs = {0x08, '_', 'C', 'R', 'S'};
  Append(name_crs, Package({0x11}, buffer_body));  // BufferOp
  return name_crs;
}

// Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi }
void PutEdgeInterrupt(std::vector<uint8_t>& crs, uint32_t gsi) {
  crs.insert(crs.end(), {0x89, 0x06, 0x00, 0x03, 0x01});
  for (int i = 0; i < 4; ++i) crs.push_back((gsi >> (8 * i)) & 0xff);
}

std::vector<uint8_t> DeviceAml(const MmioDeviceDescription& d, size_t index) {
  std::vector<uint8_t> crs;
  // Memory32Fixed(ReadWrite, address, size)
  crs.insert(crs.end(), {0x86, 0x09, 0x00, 0x01});
  for (int i = 0; i < 4; ++i) crs.push_back((d.address >> (8 * i)) & 0xff);
  for (int i = 0; i < 4; ++i) crs.push_back((d.size >> (8 * i)) & 0xff);
  PutEdgeInterrupt(crs, d.irq);
  crs.insert(crs.end(), {0x79, 0x00});  // EndTag

  char seg[5];
  std::snprintf(seg, sizeof(seg), "V%03zX", index % 0x1000);
  std::vector<uint8_t> body(seg, seg + 4);
  Append(body, NameString("_HID", d.hid));
  Append(body, NameDword("_UID", index));
  Append(body, NameCrs(crs));
  return Package({0x5b, 0x82}, body);  // DeviceOp
}

std::vector<uint8_t> IoDeviceAml(const IoDeviceDescription& d) {
  std::vector<uint8_t> crs = {0x47, 0x01,  // IO(Decode16, ...)
                              uint8_t(d.port), uint8_t(d.port >> 8),
                              uint8_t(d.port), uint8_t(d.port >> 8),
                              0x01, d.port_len,
                              0x22,  // IRQNoFlags() { irq }
                              uint8_t((1u << d.irq) & 0xff),
                              uint8_t((1u << d.irq) >> 8),
                              0x79, 0x00};
  std::string n = (d.name + "____").substr(0, 4);
  std::vector<uint8_t> body(n.begin(), n.end());
  Append(body, NameDword("_HID", EisaId(d.hid)));
  Append(body, NameDword("_UID", 1));
  Append(body, NameCrs(crs));
  return Package({0x5b, 0x82}, body);  // DeviceOp
}

// \_SB.PCI0: the host bridge of PCI segment 0. Linux on ACPI scans only the
// root buses the DSDT declares (no PNP0A03/PNP0A08 device: no PCI devices at
// all, MCFG or not), and assigns BARs only inside the windows in their _CRS.
// No _PRT: the functions have no INTx pin (MSI-X only).
std::vector<uint8_t> PciHostBridgeAml(const PciEcamDescription& e) {
  auto put16 = [](std::vector<uint8_t>& v, uint16_t x) {
    v.push_back(x & 0xff);
    v.push_back(x >> 8);
  };
  auto put32 = [](std::vector<uint8_t>& v, uint32_t x) {
    for (int i = 0; i < 4; ++i) v.push_back((x >> (8 * i)) & 0xff);
  };
  std::vector<uint8_t> crs;
  // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
  //                0, 0, end_bus, 0, end_bus + 1)
  crs.insert(crs.end(), {0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00});
  put16(crs, 0);
  put16(crs, 0);
  put16(crs, e.end_bus);
  put16(crs, 0);
  put16(crs, static_cast<uint16_t>(e.end_bus + 1));
  // IO (Decode16, 0xcf8, 0xcf8, 1, 8): configuration mechanism #1
  crs.insert(crs.end(), {0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08});
  if (e.mmio_size != 0) {
    // DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed,
    //              NonCacheable, ReadWrite, 0, base, base + size - 1, 0, size)
    crs.insert(crs.end(), {0x87, 0x17, 0x00, 0x00, 0x0c, 0x01});
    put32(crs, 0);
    put32(crs, e.mmio_base);
    put32(crs, e.mmio_base + e.mmio_size - 1);
    put32(crs, 0);
    put32(crs, e.mmio_size);
  }
  crs.insert(crs.end(), {0x79, 0x00});  // EndTag

  std::vector<uint8_t> body = {'P', 'C', 'I', '0'};
  Append(body, NameDword("_HID", EisaId("PNP0A08")));  // PCI Express root
  Append(body, NameDword("_CID", EisaId("PNP0A03")));  // PCI root
  Append(body, NameDword("_UID", 0));
  Append(body, NameDword("_SEG", 0));
  Append(body, NameDword("_BBN", 0));
  Append(body, NameCrs(crs));
  return Package({0x5b, 0x82}, body);  // DeviceOp
}

// \_SB.PWRB (the power button) and \_SB.GED0, whose interrupt notifies it.
std::vector<uint8_t> PowerButtonAml(const AcpiPowerDescription& p) {
  std::vector<uint8_t> pwrb = {'P', 'W', 'R', 'B'};
  Append(pwrb, NameDword("_HID", EisaId("PNP0C0C")));
  Append(pwrb, NameDword("_UID", 0));
  std::vector<uint8_t> crs;
  PutEdgeInterrupt(crs, p.ged_irq);
  crs.insert(crs.end(), {0x79, 0x00});  // EndTag
  // Method (_EVT, 1) { Notify (\_SB.PWRB, 0x80) }: the GED driver calls
  // it with the GSI; there is one event, so the argument is not read.
  std::vector<uint8_t> evt = {'_', 'E', 'V', 'T', 0x01,  // one argument
                              0x86, '\\', 0x2f, 0x02,    // Notify, \ two segments
                              '_', 'S', 'B', '_', 'P', 'W', 'R', 'B', 0x0a, 0x80};
  std::vector<uint8_t> ged = {'G', 'E', 'D', '0'};
  Append(ged, NameString("_HID", "ACPI0013"));
  Append(ged, NameDword("_UID", 0));
  Append(ged, NameCrs(crs));
  Append(ged, Package({0x14}, evt));  // MethodOp
  return Concat(Package({0x5b, 0x82}, pwrb), Package({0x5b, 0x82}, ged));
}

// Name (\_S5, Package () { 5, 5 }): SLP_TYPa and SLP_TYPb of soft-off.
std::vector<uint8_t> SoftOffAml() {
  std::vector<uint8_t> out = {0x08, '\\', '_', 'S', '5', '_'};
  Append(out, Package({0x12}, {0x02, 0x0a, 0x05, 0x0a, 0x05}));  // PackageOp
  return out;
}

}  // namespace

std::vector<uint8_t> BuildFadt(uint64_t dsdt, const PlatformConfig& config) {
  return Fadt(dsdt, config.power);
}

uint32_t EisaId(const std::string& id) {
  if (id.size() != 7) return 0;
  auto letter = [](char c) { return static_cast<uint32_t>(c - 'A' + 1) & 0x1f; };
  uint32_t vendor = (letter(id[0]) << 10) | (letter(id[1]) << 5) | letter(id[2]);
  uint32_t product = std::stoul(id.substr(3), nullptr, 16) & 0xffff;
  // Bytes in memory: vendor (big-endian), product (big-endian).
  return ((vendor >> 8) & 0xff) | ((vendor & 0xff) << 8) |
         (((product >> 8) & 0xff) << 16) | ((product & 0xff) << 24);
}

uint8_t ChecksumByte(const uint8_t* data, size_t len) {
  uint8_t sum = 0;
  for (size_t i = 0; i < len; ++i) sum += data[i];
  return static_cast<uint8_t>(-sum);
}

std::vector<uint8_t> BuildDsdt(const PlatformConfig& config) {
  Bytes b = Header("DSDT", 2);
  if (!config.dsdt_devices.empty() || !config.io_devices.empty() || config.pci_ecam ||
      config.power) {
    std::vector<uint8_t> devices;
    if (config.pci_ecam) Append(devices, PciHostBridgeAml(*config.pci_ecam));
    if (config.power) Append(devices, PowerButtonAml(*config.power));
    for (const IoDeviceDescription& d : config.io_devices) {
      Append(devices, IoDeviceAml(d));
    }
    for (size_t i = 0; i < config.dsdt_devices.size(); ++i) {
      Append(devices, DeviceAml(config.dsdt_devices[i], i));
    }
    // Scope (\_SB) { devices }
    b.PutBytes(Package({0x10}, Concat({'\\', '_', 'S', 'B', '_'}, devices)));
  }
  if (config.power) b.PutBytes(SoftOffAml());
  return Finish(std::move(b));
}

std::vector<uint8_t> BuildMadt(const PlatformConfig& config) {
  Bytes b = Header("APIC", 5);
  b.Put<uint32_t>(kLapicAddress);
  b.Put<uint32_t>(config.has_pic ? 1 : 0);  // PCAT_COMPAT: 8259s present
  for (uint32_t i = 0; i < config.num_cpus; ++i) {
    b.Put<uint8_t>(0);  // Processor Local APIC
    b.Put<uint8_t>(8);
    b.Put<uint8_t>(i);  // ACPI processor UID
    b.Put<uint8_t>(i);  // APIC ID
    b.Put<uint32_t>(1);  // enabled
  }
  b.Put<uint8_t>(1);  // I/O APIC
  b.Put<uint8_t>(12);
  b.Put<uint8_t>(config.num_cpus);  // I/O APIC ID after the CPUs'
  b.Put<uint8_t>(0);
  b.Put<uint32_t>(kIoapicAddress);
  b.Put<uint32_t>(0);  // GSI base
  b.Put<uint8_t>(2);   // Interrupt Source Override: ISA IRQ 0 -> GSI 2
  b.Put<uint8_t>(10);
  b.Put<uint8_t>(0);
  b.Put<uint8_t>(0);
  b.Put<uint32_t>(2);
  b.Put<uint16_t>(0);
  b.Put<uint8_t>(4);  // Local APIC NMI on LINT1 of every CPU
  b.Put<uint8_t>(6);
  b.Put<uint8_t>(0xff);
  b.Put<uint16_t>(0);
  b.Put<uint8_t>(1);
  return Finish(std::move(b));
}

// MCFG: where PCI segment 0's ECAM lives (PCI Firmware Spec 3.0, 4.1.2).
std::vector<uint8_t> BuildMcfg(const PciEcamDescription& e) {
  Bytes b = Header("MCFG", 1);
  b.Put<uint64_t>(0);  // reserved
  b.Put<uint64_t>(e.base);
  b.Put<uint16_t>(0);  // segment group
  b.Put<uint8_t>(0);   // start bus
  b.Put<uint8_t>(e.end_bus);
  b.Put<uint32_t>(0);  // reserved
  return Finish(std::move(b));
}

absl::StatusOr<uint64_t> WriteAcpiTables(vm_memory::GuestMemory& mem,
                                         const PlatformConfig& config) {
  if (config.num_cpus == 0 || config.num_cpus > kMaxCpus) {
    return absl::InvalidArgumentError(
        absl::StrCat("ACPI: ", config.num_cpus, " CPUs; 1 to ", kMaxCpus, " supported"));
  }
  uint64_t next = kAcpiTablesAddress;
  auto place = [&](const std::vector<uint8_t>& table) -> absl::StatusOr<uint64_t> {
    uint64_t at = next;
    if (at + table.size() > kAcpiTablesEnd) {
      return absl::ResourceExhaustedError("ACPI tables do not fit below 0xf0000");
    }
    RETURN_IF_ERROR(mem.Write(GuestAddress(at), table));
    next = (at + table.size() + 15) & ~15ULL;
    return at;
  };
  ASSIGN_OR_RETURN(uint64_t dsdt, place(BuildDsdt(config)));
  ASSIGN_OR_RETURN(uint64_t fadt, place(BuildFadt(dsdt, config)));
  ASSIGN_OR_RETURN(uint64_t madt, place(BuildMadt(config)));
  Bytes x = Header("XSDT", 1);
  x.Put<uint64_t>(fadt);
  x.Put<uint64_t>(madt);
  if (config.pci_ecam) {
    ASSIGN_OR_RETURN(uint64_t mcfg, place(BuildMcfg(*config.pci_ecam)));
    x.Put<uint64_t>(mcfg);
  }
  ASSIGN_OR_RETURN(uint64_t xsdt, place(Finish(std::move(x))));

  Bytes r;
  r.PutString("RSD PTR ", 8);
  r.Put<uint8_t>(0);  // checksum over the first 20 bytes
  r.PutString(kOemId, 6);
  r.Put<uint8_t>(2);   // revision: ACPI 2.0+
  r.Put<uint32_t>(0);  // RSDT address: none, XSDT only
  r.Put<uint32_t>(36);
  r.Put<uint64_t>(xsdt);
  r.Put<uint8_t>(0);  // extended checksum
  r.PutString("\0\0\0", 3);
  std::vector<uint8_t>& rsdp = r.data();
  std::memset(rsdp.data() + 33, 0, 3);
  rsdp[8] = ChecksumByte(rsdp.data(), 20);
  rsdp[32] = ChecksumByte(rsdp.data(), 36);
  RETURN_IF_ERROR(mem.Write(GuestAddress(kRsdpAddress), rsdp));
  return kRsdpAddress;
}

}  // namespace vcpu::boot
