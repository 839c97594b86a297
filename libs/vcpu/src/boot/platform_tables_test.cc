#include "vcpu/boot/platform_tables.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "kindling/test_skip.h"
#include "vcpu/boot/layout.h"
#include "vm-memory/layout.h"

using namespace vcpu::boot;
using vm_memory::GuestAddress;

namespace {

std::unique_ptr<vm_memory::GuestMemory> Ram() {
  auto mem = vm_memory::GuestMemory::Create(vm_memory::X86RamLayout(16 << 20));
  REQUIRE(mem.ok());
  return std::move(*mem);
}

std::vector<uint8_t> ReadBytes(vm_memory::GuestMemory& m, uint64_t a, size_t n) {
  std::vector<uint8_t> v(n);
  REQUIRE(m.Read(GuestAddress(a), v).ok());
  return v;
}

uint8_t Sum(const std::vector<uint8_t>& v) {
  uint8_t s = 0;
  for (uint8_t b : v) s += b;
  return s;
}

template <typename T>
T At(const std::vector<uint8_t>& v, size_t off) {
  T x;
  std::memcpy(&x, v.data() + off, sizeof(T));
  return x;
}

// Follows RSDP -> XSDT and returns each table by signature.
std::map<std::string, std::vector<uint8_t>> Tables(vm_memory::GuestMemory& m,
                                                   uint64_t rsdp_addr) {
  auto rsdp = ReadBytes(m, rsdp_addr, 36);
  REQUIRE(std::memcmp(rsdp.data(), "RSD PTR ", 8) == 0);
  REQUIRE(Sum({rsdp.begin(), rsdp.begin() + 20}) == 0);
  REQUIRE(Sum(rsdp) == 0);
  uint64_t xsdt_addr = At<uint64_t>(rsdp, 24);
  auto xh = ReadBytes(m, xsdt_addr, 36);
  auto xsdt = ReadBytes(m, xsdt_addr, At<uint32_t>(xh, 4));
  REQUIRE(Sum(xsdt) == 0);
  std::map<std::string, std::vector<uint8_t>> out;
  for (size_t off = 36; off < xsdt.size(); off += 8) {
    uint64_t a = At<uint64_t>(xsdt, off);
    auto h = ReadBytes(m, a, 36);
    auto t = ReadBytes(m, a, At<uint32_t>(h, 4));
    REQUIRE(Sum(t) == 0);
    out[std::string(t.begin(), t.begin() + 4)] = t;
  }
  return out;
}

}  // namespace

TEST_CASE("ACPI: valid checksums, one LAPIC per CPU, DSDT via FADT") {
  auto mem = Ram();
  PlatformConfig cfg;
  cfg.num_cpus = 4;
  auto rsdp = WriteAcpiTables(*mem, cfg);
  REQUIRE(rsdp.ok());
  REQUIRE(*rsdp == kRsdpAddress);
  auto tables = Tables(*mem, *rsdp);
  REQUIRE(tables.count("FACP") == 1);
  REQUIRE(tables.count("APIC") == 1);
  const auto& madt = tables["APIC"];
  REQUIRE(At<uint32_t>(madt, 36) == kLapicAddress);
  int lapics = 0;
  for (size_t off = 44; off < madt.size(); off += madt[off + 1]) {
    REQUIRE(madt[off + 1] >= 2);
    if (madt[off] == 0) {
      REQUIRE(madt[off + 3] == lapics);  // APIC ID
      ++lapics;
    }
  }
  REQUIRE(lapics == 4);
  const auto& fadt = tables["FACP"];
  REQUIRE(fadt.size() == 276);
  uint64_t dsdt_addr = At<uint64_t>(fadt, 140);
  auto dh = ReadBytes(*mem, dsdt_addr, 36);
  REQUIRE(std::memcmp(dh.data(), "DSDT", 4) == 0);
  REQUIRE(At<uint32_t>(fadt, 112) & (1u << 20));  // HW_REDUCED_ACPI
}

TEST_CASE("DSDT describes MMIO devices with _HID and _CRS") {
  PlatformConfig cfg;
  cfg.dsdt_devices.push_back({"LNRO0005", 0xd0000000, 0x1000, 5});
  auto dsdt = BuildDsdt(cfg);
  REQUIRE(Sum(dsdt) == 0);
  std::string text(dsdt.begin(), dsdt.end());
  REQUIRE(text.find("LNRO0005") != std::string::npos);
  REQUIRE(text.find("_CRS") != std::string::npos);
  REQUIRE(text.find("_SB_") != std::string::npos);
  size_t mem32 = text.find('\x86');
  REQUIRE(mem32 != std::string::npos);
  REQUIRE(At<uint32_t>(dsdt, mem32 + 4) == 0xd0000000);
}

TEST_CASE("DSDT declares the PCI host bridge with bus range and BAR window") {
  PlatformConfig cfg;
  REQUIRE(BuildDsdt(cfg).size() == 36);  // no PCI: no PCI0
  cfg.pci_ecam = PciEcamDescription{0xeff00000, 0, 0xc0000000, 0x2ff00000};
  auto dsdt = BuildDsdt(cfg);
  REQUIRE(Sum(dsdt) == 0);
  std::string text(dsdt.begin(), dsdt.end());
  REQUIRE(text.find("PCI0") != std::string::npos);
  REQUIRE(text.find("_SEG") != std::string::npos);
  REQUIRE(text.find("_BBN") != std::string::npos);
  // _HID PNP0A08, _CID PNP0A03
  auto dword = [](uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); };
  REQUIRE(text.find("_HID\x0c" + dword(EisaId("PNP0A08"))) != std::string::npos);
  REQUIRE(text.find("_CID\x0c" + dword(EisaId("PNP0A03"))) != std::string::npos);
  // WordBusNumber producer for bus 0..0
  size_t bus = text.find(std::string("\x88\x0d\x00\x02", 4));
  REQUIRE(bus != std::string::npos);
  REQUIRE(At<uint16_t>(dsdt, bus + 10) == 0);  // max bus
  REQUIRE(At<uint16_t>(dsdt, bus + 14) == 1);  // length
  // DWordMemory producer: the BAR window
  size_t mem = text.find(std::string("\x87\x17\x00\x00", 4));
  REQUIRE(mem != std::string::npos);
  REQUIRE(At<uint32_t>(dsdt, mem + 10) == 0xc0000000);
  REQUIRE(At<uint32_t>(dsdt, mem + 14) == 0xefefffff);
  REQUIRE(At<uint32_t>(dsdt, mem + 22) == 0x2ff00000);
}

TEST_CASE("MP table: floating pointer in the EBDA, one processor per CPU") {
  auto mem = Ram();
  PlatformConfig cfg;
  cfg.num_cpus = 3;
  REQUIRE(WriteMpTable(*mem, cfg).ok());
  auto fp = ReadBytes(*mem, kEbdaStart, 16);
  REQUIRE(std::memcmp(fp.data(), "_MP_", 4) == 0);
  REQUIRE(Sum(fp) == 0);
  uint32_t cfg_addr = At<uint32_t>(fp, 4);
  auto hdr = ReadBytes(*mem, cfg_addr, 44);
  REQUIRE(std::memcmp(hdr.data(), "PCMP", 4) == 0);
  auto table = ReadBytes(*mem, cfg_addr, At<uint16_t>(hdr, 4));
  REQUIRE(Sum(table) == 0);
  int cpus = 0, bsp = 0;
  size_t off = 44;
  for (int i = 0; i < At<uint16_t>(hdr, 34); ++i) {
    uint8_t type = table[off];
    if (type == 0) {
      ++cpus;
      if (table[off + 3] & 2) ++bsp;
      off += 20;
    } else {
      off += 8;
    }
  }
  REQUIRE(off == table.size());
  REQUIRE(cpus == 3);
  REQUIRE(bsp == 1);
}

TEST_CASE("Platform tables refuse 0 or too many CPUs") {
  auto mem = Ram();
  PlatformConfig cfg;
  cfg.num_cpus = 0;
  REQUIRE_FALSE(WriteAcpiTables(*mem, cfg).ok());
  cfg.num_cpus = kMaxCpus + 1;
  REQUIRE_FALSE(WriteMpTable(*mem, cfg).ok());
  cfg.num_cpus = kMaxCpus;
  REQUIRE(WriteMpTable(*mem, cfg).ok());
  REQUIRE(WriteAcpiTables(*mem, cfg).ok());
}

TEST_CASE("EisaId encodes like ACPI's EisaId()") {
  REQUIRE(EisaId("PNP0501") == 0x0105d041);
  REQUIRE(EisaId("PNP0B00") == 0x000bd041);
  REQUIRE(EisaId("bad") == 0);
}

TEST_CASE("DSDT announces COM1 with its port and IRQ") {
  PlatformConfig cfg;
  cfg.io_devices.push_back({"COM1", "PNP0501", 0x3f8, 8, 4});
  auto dsdt = BuildDsdt(cfg);
  REQUIRE(Sum(dsdt) == 0);
  std::string text(dsdt.begin(), dsdt.end());
  REQUIRE(text.find("COM1") != std::string::npos);
  size_t io = text.find(std::string("\x47\x01\xf8\x03\xf8\x03", 6));
  REQUIRE(io != std::string::npos);
  REQUIRE(dsdt[io + 7] == 8);     // port range length
  REQUIRE(dsdt[io + 8] == 0x22);  // IRQNoFlags
  REQUIRE(dsdt[io + 9] == 0x10);  // IRQ 4
}

TEST_CASE("ACPI tables disassemble cleanly with iasl (ACPICA)") {
  KINDLING_SKIP_UNLESS_INSTALLED(std::system("command -v iasl >/dev/null 2>&1") == 0,
                                 "iasl (acpica-tools)");
  auto mem = Ram();
  PlatformConfig cfg;
  cfg.num_cpus = 2;
  cfg.io_devices.push_back({"COM1", "PNP0501", 0x3f8, 8, 4});
  cfg.dsdt_devices.push_back({"LNRO0005", 0xd0000000, 0x200, 5});
  cfg.pci_ecam = PciEcamDescription{0xeff00000, 0, 0xc0000000, 0x2ff00000};
  cfg.power = AcpiPowerDescription{3, 0x3c0};
  auto rsdp = WriteAcpiTables(*mem, cfg);
  REQUIRE(rsdp.ok());
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = tmp ? tmp : "/tmp";
  for (const auto& [sig, table] : Tables(*mem, *rsdp)) {
    std::string path = dir + "/" + sig + ".aml";
    FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    std::fwrite(table.data(), 1, table.size(), f);
    std::fclose(f);
    std::string cmd = "cd " + dir + " && iasl -d " + sig + ".aml > " + sig + ".log 2>&1";
    int rc = std::system(cmd.c_str());
    std::string log_cmd = "! grep -iE 'error|warning' " + dir + "/" + sig + ".log";
    INFO("iasl on " << sig);
    REQUIRE(rc == 0);
    REQUIRE(std::system(log_cmd.c_str()) == 0);
  }
  // The DSDT, reached through the FADT, too.
  auto fadt = Tables(*mem, *rsdp)["FACP"];
  auto dh = ReadBytes(*mem, At<uint64_t>(fadt, 140), 36);
  auto dsdt = ReadBytes(*mem, At<uint64_t>(fadt, 140), At<uint32_t>(dh, 4));
  std::string path = dir + "/DSDT.aml";
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(dsdt.data(), 1, dsdt.size(), f);
  std::fclose(f);
  REQUIRE(std::system(("cd " + dir + " && iasl -d DSDT.aml > DSDT.log 2>&1").c_str()) == 0);
  REQUIRE(std::system(("! grep -iE 'error|warning' " + dir + "/DSDT.log").c_str()) == 0);
  REQUIRE(std::system(("grep -q PNP0501 " + dir + "/DSDT.dsl").c_str()) == 0);
  REQUIRE(std::system(("grep -q 'EisaId (\"PNP0A08\")' " + dir + "/DSDT.dsl").c_str()) == 0);
  REQUIRE(std::system(("grep -q WordBusNumber " + dir + "/DSDT.dsl").c_str()) == 0);
  REQUIRE(std::system(("grep -q DWordMemory " + dir + "/DSDT.dsl").c_str()) == 0);
  // The power button, the GED that notifies it, and soft-off.
  REQUIRE(std::system(("grep -q 'EisaId (\"PNP0C0C\")' " + dir + "/DSDT.dsl").c_str()) == 0);
  REQUIRE(std::system(("grep -q '\"ACPI0013\"' " + dir + "/DSDT.dsl").c_str()) == 0);
  REQUIRE(std::system(("grep -q 'Notify (PWRB, 0x80)\\|Notify (\\\\_SB.PWRB, 0x80)' " + dir +
                       "/DSDT.dsl").c_str()) == 0);
  REQUIRE(std::system(("grep -q '_S5' " + dir + "/DSDT.dsl").c_str()) == 0);
  REQUIRE(std::system(("grep -q 'Sleep Control Register' " + dir + "/FACP.dsl").c_str()) == 0);
}

TEST_CASE("ACPI power: FADT sleep registers and DSDT power button only when asked") {
  PlatformConfig cfg;
  auto plain = BuildFadt(0x1000, cfg);
  REQUIRE(plain.size() == 276);
  REQUIRE(At<uint64_t>(plain, 244 + 4) == 0);  // no sleep control register
  auto plain_dsdt = BuildDsdt(cfg);
  REQUIRE(std::string(plain_dsdt.begin(), plain_dsdt.end()).find("PWRB") == std::string::npos);
  cfg.power = AcpiPowerDescription{3, 0x3c0};
  auto fadt = BuildFadt(0x1000, cfg);
  REQUIRE(Sum(fadt) == 0);
  REQUIRE(fadt[244] == 1);                        // system I/O
  REQUIRE(At<uint64_t>(fadt, 244 + 4) == 0x3c0);  // SLEEP_CONTROL_REG
  REQUIRE(At<uint64_t>(fadt, 256 + 4) == 0x3c1);  // SLEEP_STATUS_REG
  auto dsdt = BuildDsdt(cfg);
  std::string text(dsdt.begin(), dsdt.end());
  REQUIRE(text.find("ACPI0013") != std::string::npos);
  // The GED's Interrupt descriptor carries GSI 3.
  size_t irq = text.find(std::string("\x89\x06\x00\x03\x01", 5));
  REQUIRE(irq != std::string::npos);
  REQUIRE(At<uint32_t>(dsdt, irq + 5) == 3);
  // \_S5 = Package (2) { 5, 5 }
  REQUIRE(text.find(std::string("_S5_\x12\x06\x02\x0a\x05\x0a\x05", 11)) != std::string::npos);
}
