// Intel MultiProcessor Specification 1.4 table: the floating pointer in the
// EBDA, the configuration table at kMpConfigAddress.
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "vcpu/boot/layout.h"
#include "vcpu/boot/platform_tables.h"

namespace vcpu::boot {
namespace {

using vm_memory::GuestAddress;

constexpr uint8_t kApicVersion = 0x14;
constexpr uint8_t kIoapicVersion = 0x11;
constexpr int kIsaIrqs = 16;

template <typename T>
void Put(std::vector<uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

void PutText(std::vector<uint8_t>& out, std::string_view s, size_t width) {
  for (size_t i = 0; i < width; ++i) out.push_back(i < s.size() ? s[i] : ' ');
}

void PutInterrupt(std::vector<uint8_t>& out, uint8_t type, uint8_t irq_type,
                  uint8_t src_irq, uint8_t dst_apic, uint8_t dst_pin) {
  out.push_back(type);
  out.push_back(irq_type);  // 0 INT, 1 NMI, 3 ExtINT
  Put<uint16_t>(out, 0);    // polarity/trigger: conforms to bus
  out.push_back(0);         // source bus: ISA
  out.push_back(src_irq);
  out.push_back(dst_apic);
  out.push_back(dst_pin);
}

}  // namespace

absl::Status WriteMpTable(vm_memory::GuestMemory& mem,
                          const PlatformConfig& config) {
  if (config.num_cpus == 0 || config.num_cpus > kMaxCpus) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MP table: ", config.num_cpus, " CPUs; 1 to ", kMaxCpus, " supported"));
  }
  const uint8_t ioapic_id = config.num_cpus;
  std::vector<uint8_t> entries;
  uint16_t count = 0;
  for (uint32_t i = 0; i < config.num_cpus; ++i) {
    entries.push_back(0);  // processor
    entries.push_back(i);  // local APIC ID
    entries.push_back(kApicVersion);
    entries.push_back(i == 0 ? 0x3 : 0x1);  // enabled; bootstrap processor
    Put<uint32_t>(entries, 0x600);          // CPU signature: family 6
    Put<uint32_t>(entries, 0x201);          // features: FPU, APIC
    Put<uint64_t>(entries, 0);
    ++count;
  }
  entries.push_back(1);  // bus
  entries.push_back(0);
  PutText(entries, "ISA", 6);
  ++count;
  entries.push_back(2);  // I/O APIC
  entries.push_back(ioapic_id);
  entries.push_back(kIoapicVersion);
  entries.push_back(1);  // usable
  Put<uint32_t>(entries, kIoapicAddress);
  ++count;
  for (int irq = 0; irq < kIsaIrqs; ++irq) {
    // IRQ 0 goes to pin 2, as on PC hardware and in the MADT override.
    PutInterrupt(entries, 3, 0, irq, ioapic_id, irq == 0 ? 2 : irq);
    ++count;
  }
  // Local interrupts: ExtINT (the 8259) on LINT0, NMI on LINT1.
  PutInterrupt(entries, 4, 3, 0, 0xff, 0);
  PutInterrupt(entries, 4, 1, 0, 0xff, 1);
  count += 2;

  std::vector<uint8_t> table;
  PutText(table, "PCMP", 4);
  Put<uint16_t>(table, 44 + entries.size());
  table.push_back(4);  // spec revision 1.4
  table.push_back(0);  // checksum
  PutText(table, "KINDLING", 8);
  PutText(table, "MICROVM", 12);
  Put<uint32_t>(table, 0);  // OEM table
  Put<uint16_t>(table, 0);
  Put<uint16_t>(table, count);
  Put<uint32_t>(table, kLapicAddress);
  Put<uint16_t>(table, 0);  // extended table length
  table.push_back(0);       // extended checksum
  table.push_back(0);
  table.insert(table.end(), entries.begin(), entries.end());
  table[7] = ChecksumByte(table.data(), table.size());
  if (kMpConfigAddress + table.size() > kMpConfigEnd) {
    return absl::ResourceExhaustedError("MP table does not fit");
  }

  std::vector<uint8_t> fp;
  PutText(fp, "_MP_", 4);
  Put<uint32_t>(fp, kMpConfigAddress);
  fp.push_back(1);  // length in 16-byte units
  fp.push_back(4);  // spec revision
  fp.push_back(0);  // checksum
  fp.insert(fp.end(), 5, 0);  // feature bytes: a configuration table follows
  fp[10] = ChecksumByte(fp.data(), fp.size());

  RETURN_IF_ERROR(mem.Write(GuestAddress(kMpConfigAddress), table));
  return mem.Write(GuestAddress(kEbdaStart), fp);
}

}  // namespace vcpu::boot
