#include "vcpu/boot/boot_setup.h"

#include <algorithm>

#include <asm/bootparam.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "vcpu/boot/e820.h"
#include "vcpu/boot/layout.h"

namespace vcpu::boot {
namespace {

using vm_memory::GuestAddress;
using vm_memory::GuestMemory;

constexpr uint16_t kBootFlag = 0xaa55;
constexpr uint32_t kHdrSMagic = 0x53726448;
constexpr uint8_t kLoaderTypeUndefined = 0xff;

// GDT: selectors 0x08 code32 (PVH), 0x10 code64 (Linux __BOOT_CS),
// 0x18 data (__BOOT_DS), 0x20 TSS.
constexpr uint64_t kGdt[] = {
    0x0000000000000000,  // null
    0x00cf9b000000ffff,  // 0x08: code, 32-bit, base 0, limit 4 GiB
    0x00af9b000000ffff,  // 0x10: code, 64-bit
    0x00cf93000000ffff,  // 0x18: data, read/write, 4 GiB
    0x008f8b000000ffff,  // 0x20: TSS (busy)
};
constexpr uint16_t kCode32Selector = 0x08;
constexpr uint16_t kCode64Selector = 0x10;
constexpr uint16_t kDataSelector = 0x18;
constexpr uint16_t kTssSelector = 0x20;

constexpr uint64_t kCr0Pe = 1ULL << 0;
constexpr uint64_t kCr0Et = 1ULL << 4;
constexpr uint64_t kCr0Pg = 1ULL << 31;
constexpr uint64_t kCr4Pae = 1ULL << 5;
constexpr uint64_t kEferLme = 1ULL << 8;
constexpr uint64_t kEferLma = 1ULL << 10;

kvm_segment SegmentFromGdt(uint16_t selector) {
  uint64_t d = kGdt[selector / 8];
  kvm_segment s = {};
  s.selector = selector;
  s.base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24);
  uint32_t limit = (d & 0xffff) | (((d >> 48) & 0xf) << 16);
  s.g = (d >> 55) & 1;
  s.limit = s.g ? (limit << 12) | 0xfff : limit;
  s.type = (d >> 40) & 0xf;
  s.s = (d >> 44) & 1;
  s.dpl = (d >> 45) & 3;
  s.present = (d >> 47) & 1;
  s.avl = (d >> 52) & 1;
  s.l = (d >> 53) & 1;
  s.db = (d >> 54) & 1;
  return s;
}

// RAM from the regions plus the caller's reserved ranges, by address.
std::vector<E820Entry> MemoryMap(const GuestMemory& mem, const BootConfig& config) {
  std::vector<E820Entry> map = BuildE820(mem);
  for (const E820Entry& e : config.reserved) map.push_back(e);
  std::sort(map.begin(), map.end(),
            [](const E820Entry& a, const E820Entry& b) { return a.addr < b.addr; });
  return map;
}

absl::Status WriteCmdline(GuestMemory& mem, const std::string& cmdline,
                          uint64_t max_size) {
  if (cmdline.size() + 1 > max_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kernel command line is ", cmdline.size(), " bytes; the limit is ",
        max_size - 1));
  }
  std::vector<uint8_t> bytes(cmdline.begin(), cmdline.end());
  bytes.push_back(0);
  return mem.Write(GuestAddress(kCmdlineAddress), bytes);
}

absl::Status WriteZeroPage(GuestMemory& mem, const LoadedKernel& kernel,
                           const BootConfig& config) {
  boot_params bp;
  std::memset(&bp, 0, sizeof(bp));
  uint64_t cmdline_max = kCmdlineMaxSize;
  if (kernel.setup) {
    bp.hdr = *kernel.setup;
    if (bp.hdr.cmdline_size != 0) {
      cmdline_max = std::min<uint64_t>(cmdline_max, bp.hdr.cmdline_size + 1ULL);
    }
  } else {
    bp.hdr.boot_flag = kBootFlag;
    bp.hdr.header = kHdrSMagic;
    bp.hdr.kernel_alignment = 0x1000000;
  }
  RETURN_IF_ERROR(WriteCmdline(mem, config.cmdline, cmdline_max));
  bp.hdr.type_of_loader = kLoaderTypeUndefined;
  bp.hdr.cmd_line_ptr = kCmdlineAddress;
  bp.hdr.cmdline_size = config.cmdline.size() + 1;
  if (config.initrd) {
    bp.hdr.ramdisk_image = static_cast<uint32_t>(config.initrd->address);
    bp.hdr.ramdisk_size = static_cast<uint32_t>(config.initrd->size);
    bp.ext_ramdisk_image = static_cast<uint32_t>(config.initrd->address >> 32);
    bp.ext_ramdisk_size = static_cast<uint32_t>(config.initrd->size >> 32);
  }
  if (config.rsdp != 0) bp.acpi_rsdp_addr = config.rsdp;
  std::vector<E820Entry> map = MemoryMap(mem, config);
  if (map.size() > E820_MAX_ENTRIES_ZEROPAGE) {
    return absl::InvalidArgumentError("too many e820 entries for boot_params");
  }
  bp.e820_entries = map.size();
  for (size_t i = 0; i < map.size(); ++i) {
    bp.e820_table[i].addr = map[i].addr;
    bp.e820_table[i].size = map[i].size;
    bp.e820_table[i].type = static_cast<uint32_t>(map[i].type);
  }
  return mem.WriteObj(GuestAddress(kZeroPageAddress), bp);
}

absl::Status WriteStartInfo(GuestMemory& mem, const BootConfig& config) {
  RETURN_IF_ERROR(WriteCmdline(mem, config.cmdline, kCmdlineMaxSize));
  std::vector<E820Entry> map = MemoryMap(mem, config);
  if (map.size() > kMaxMemmapEntries) {
    return absl::InvalidArgumentError("too many memory map entries for PVH");
  }
  for (size_t i = 0; i < map.size(); ++i) {
    HvmMemmapEntry e = {map[i].addr, map[i].size,
                        static_cast<uint32_t>(map[i].type), 0};
    RETURN_IF_ERROR(mem.WriteObj(
        GuestAddress(kPvhMemmapAddress + i * sizeof(HvmMemmapEntry)), e));
  }
  HvmStartInfo info = {};
  info.magic = kHvmStartMagic;
  info.version = 1;
  info.cmdline_paddr = kCmdlineAddress;
  info.rsdp_paddr = config.rsdp;
  info.memmap_paddr = kPvhMemmapAddress;
  info.memmap_entries = map.size();
  if (config.initrd) {
    HvmModlistEntry mod = {config.initrd->address, config.initrd->size, 0, 0};
    RETURN_IF_ERROR(mem.WriteObj(GuestAddress(kPvhModlistAddress), mod));
    info.nr_modules = 1;
    info.modlist_paddr = kPvhModlistAddress;
  }
  return mem.WriteObj(GuestAddress(kPvhStartInfoAddress), info);
}

absl::Status WritePageTables(GuestMemory& mem) {
  // PML4[0] -> PDPT; PDPT[0..3] -> four PDs of 2 MiB pages: 0..4 GiB.
  RETURN_IF_ERROR(mem.WriteObj<uint64_t>(GuestAddress(kPml4Address),
                                         kPdptAddress | 0x3));
  std::vector<uint64_t> pdpt(512, 0);
  for (uint64_t i = 0; i < 4; ++i) pdpt[i] = (kPdAddress + i * 0x1000) | 0x3;
  RETURN_IF_ERROR(mem.Write(GuestAddress(kPdptAddress),
                            {reinterpret_cast<uint8_t*>(pdpt.data()), 4096}));
  std::vector<uint64_t> pd(4 * 512);
  for (uint64_t i = 0; i < pd.size(); ++i) pd[i] = (i << 21) | 0x83;  // P|RW|PS
  return mem.Write(GuestAddress(kPdAddress),
                   {reinterpret_cast<uint8_t*>(pd.data()), pd.size() * 8});
}

}  // namespace

absl::Status WriteBootInfo(GuestMemory& mem, const LoadedKernel& kernel,
                           const BootConfig& config) {
  if (kernel.protocol == BootProtocol::kPvh) return WriteStartInfo(mem, config);
  return WriteZeroPage(mem, kernel, config);
}

absl::StatusOr<BootCpuState> SetupBootCpu(GuestMemory& mem,
                                          const LoadedKernel& kernel,
                                          const kvm_sregs& initial) {
  RETURN_IF_ERROR(mem.Write(
      GuestAddress(kGdtAddress),
      {reinterpret_cast<const uint8_t*>(kGdt), sizeof(kGdt)}));
  RETURN_IF_ERROR(mem.WriteObj<uint64_t>(GuestAddress(kIdtAddress), 0));
  BootCpuState st;
  std::memset(&st.regs, 0, sizeof(st.regs));
  st.sregs = initial;
  st.sregs.gdt.base = kGdtAddress;
  st.sregs.gdt.limit = sizeof(kGdt) - 1;
  st.sregs.idt.base = kIdtAddress;
  st.sregs.idt.limit = 7;
  kvm_segment data = SegmentFromGdt(kDataSelector);
  st.sregs.ds = st.sregs.es = st.sregs.fs = st.sregs.gs = st.sregs.ss = data;
  st.sregs.tr = SegmentFromGdt(kTssSelector);
  st.regs.rflags = 0x2;
  if (kernel.protocol == BootProtocol::kPvh) {
    st.sregs.cs = SegmentFromGdt(kCode32Selector);
    st.sregs.cr0 = kCr0Pe | kCr0Et;
    st.sregs.cr3 = 0;
    st.sregs.cr4 = 0;
    st.sregs.efer = 0;
    st.regs.rip = kernel.entry;
    st.regs.rbx = kPvhStartInfoAddress;
    return st;
  }
  RETURN_IF_ERROR(WritePageTables(mem));
  st.sregs.cs = SegmentFromGdt(kCode64Selector);
  st.sregs.cr0 = kCr0Pe | kCr0Et | kCr0Pg;
  st.sregs.cr3 = kPml4Address;
  st.sregs.cr4 = kCr4Pae;
  st.sregs.efer = kEferLme | kEferLma;
  st.regs.rip = kernel.entry;
  st.regs.rsi = kZeroPageAddress;
  st.regs.rsp = kBootStackTop;
  st.regs.rbp = kBootStackTop;
  return st;
}

}  // namespace vcpu::boot
