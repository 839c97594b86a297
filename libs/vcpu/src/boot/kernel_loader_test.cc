#include "vcpu/boot/kernel_loader.h"

#include <elf.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "vcpu/boot/boot_setup.h"
#include "vcpu/boot/e820.h"
#include "vcpu/boot/layout.h"
#include "vm-memory/layout.h"

using namespace vcpu::boot;
using vm_memory::GuestAddress;
using vm_memory::GuestMemory;

namespace {

std::unique_ptr<GuestMemory> Ram(uint64_t bytes) {
  auto mem = GuestMemory::Create(vm_memory::X86RamLayout(bytes));
  REQUIRE(mem.ok());
  return std::move(*mem);
}

// A minimal x86-64 ELF with one PT_LOAD of `code` at `paddr`.
std::vector<uint8_t> MakeElf(uint64_t paddr, const std::vector<uint8_t>& code,
                             uint64_t memsz = 0) {
  std::vector<uint8_t> f(sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr));
  Elf64_Ehdr eh = {};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_entry = paddr;
  eh.e_phoff = sizeof(eh);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 1;
  Elf64_Phdr ph = {};
  ph.p_type = PT_LOAD;
  ph.p_offset = f.size();
  ph.p_paddr = paddr;
  ph.p_filesz = code.size();
  ph.p_memsz = memsz ? memsz : code.size();
  std::memcpy(f.data(), &eh, sizeof(eh));
  std::memcpy(f.data() + sizeof(eh), &ph, sizeof(ph));
  // (resize + memcpy: gcc 12 -O2 warns falsely about vector::insert here)
  const size_t at = f.size();
  f.resize(at + code.size());
  if (!code.empty()) std::memcpy(f.data() + at, code.data(), code.size());
  return f;
}

bool Mentions(const absl::Status& s, const std::string& t) {
  return !s.ok() && std::string(s.message()).find(t) != std::string::npos;
}

}  // namespace

TEST_CASE("The hello test guest loads as a PVH kernel") {
  auto image = ReadFileCapped("tests/guests/hello.elf", 64 << 20);
  REQUIRE(image.ok());
  auto mem = Ram(64 << 20);
  auto k = LoadKernel(*mem, *image);
  REQUIRE(k.ok());
  REQUIRE(k->protocol == BootProtocol::kPvh);
  REQUIRE(k->entry >= kHighMemoryStart);
  REQUIRE(k->image_end > k->entry);
  REQUIRE(mem->CountDirtyPages() > 0);
  auto linux64 = LoadKernel(*mem, *image, ElfEntry::kLinux64);
  REQUIRE(linux64.ok());
  REQUIRE(linux64->protocol == BootProtocol::kLinux64);
}

TEST_CASE("The hello guest as a 32-bit ELF loads through its PVH note") {
  auto image = ReadFileCapped("tests/guests/hello32.elf", 64 << 20);
  REQUIRE(image.ok());
  REQUIRE((*image)[EI_CLASS] == ELFCLASS32);
  auto mem = Ram(64 << 20);
  auto k = LoadKernel(*mem, *image);
  REQUIRE(k.ok());
  REQUIRE(k->protocol == BootProtocol::kPvh);
  REQUIRE(k->entry >= kHighMemoryStart);
  // The same bytes as the 64-bit build of the guest.
  auto image64 = ReadFileCapped("tests/guests/hello.elf", 64 << 20);
  REQUIRE(image64.ok());
  auto mem64 = Ram(64 << 20);
  auto k64 = LoadKernel(*mem64, *image64);
  REQUIRE(k64.ok());
  REQUIRE(k->entry == k64->entry);
  REQUIRE(k->image_end == k64->image_end);
  std::vector<uint8_t> a(k->image_end - kHighMemoryStart), b(a.size());
  REQUIRE(mem->Read(GuestAddress(kHighMemoryStart), std::span<uint8_t>(a)).ok());
  REQUIRE(mem64->Read(GuestAddress(kHighMemoryStart), std::span<uint8_t>(b)).ok());
  REQUIRE(a == b);
  // 32-bit code has no 64-bit Linux entry.
  REQUIRE(Mentions(LoadKernel(*mem, *image, ElfEntry::kLinux64).status(),
                   "only through its PVH entry"));
}

TEST_CASE("A plain ELF boots through the 64-bit Linux protocol; bss zeroed") {
  auto mem = Ram(16 << 20);
  REQUIRE(mem->WriteObj<uint64_t>(GuestAddress(0x200010), ~0ULL).ok());
  auto k = LoadElf(*mem, MakeElf(0x200000, {0xf4, 0xf4}, 0x20));
  REQUIRE(k.ok());
  REQUIRE(k->protocol == BootProtocol::kLinux64);
  REQUIRE(k->entry == 0x200000);
  REQUIRE(*mem->ReadObj<uint8_t>(GuestAddress(0x200001)) == 0xf4);
  REQUIRE(*mem->ReadObj<uint64_t>(GuestAddress(0x200010)) == 0);
}

TEST_CASE("Hostile kernels are refused with the field named") {
  auto mem = Ram(16 << 20);
  REQUIRE(Mentions(LoadKernel(*mem, std::vector<uint8_t>{1, 2, 3}).status(),
                   "neither an ELF file nor a bzImage"));
  auto elf = MakeElf(0x200000, {0xf4});
  SECTION("segment beyond RAM") {
    REQUIRE(Mentions(LoadElf(*mem, MakeElf(0x40000000, {0xf4})).status(),
                     "does not fit in guest RAM"));
  }
  SECTION("segment below 1 MiB would overwrite boot structures") {
    REQUIRE(Mentions(LoadElf(*mem, MakeElf(0x7000, {0xf4})).status(),
                     "above 1 MiB"));
  }
  SECTION("file range outside the file") {
    auto* ph = reinterpret_cast<Elf64_Phdr*>(elf.data() + sizeof(Elf64_Ehdr));
    ph->p_filesz = 1 << 20;
    ph->p_memsz = 1 << 20;
    REQUIRE(Mentions(LoadElf(*mem, elf).status(), "outside the"));
  }
  SECTION("filesz larger than memsz") {
    auto* ph = reinterpret_cast<Elf64_Phdr*>(elf.data() + sizeof(Elf64_Ehdr));
    ph->p_memsz = 0;
    ph->p_filesz = 1;
    REQUIRE_FALSE(LoadElf(*mem, elf).ok());
  }
  SECTION("absurd program header count") {
    reinterpret_cast<Elf64_Ehdr*>(elf.data())->e_phnum = 60000;
    REQUIRE(Mentions(LoadElf(*mem, elf).status(), "e_phnum"));
  }
  SECTION("an x86-64 file that claims to be 32-bit") {
    elf[EI_CLASS] = ELFCLASS32;
    REQUIRE(Mentions(LoadElf(*mem, elf).status(), "not i386"));
  }
  SECTION("unknown ELF class") {
    elf[EI_CLASS] = 7;
    REQUIRE(Mentions(LoadElf(*mem, elf).status(), "EI_CLASS 7"));
  }
  SECTION("wrong machine") {
    reinterpret_cast<Elf64_Ehdr*>(elf.data())->e_machine = EM_AARCH64;
    REQUIRE(Mentions(LoadElf(*mem, elf).status(), "e_machine"));
  }
  SECTION("truncated") {
    elf.resize(20);
    REQUIRE(Mentions(LoadElf(*mem, elf).status(), "truncated"));
  }
}

TEST_CASE("bzImage header checks") {
  auto mem = Ram(32 << 20);
  std::vector<uint8_t> bz(8192, 0);
  setup_header h = {};
  h.setup_sects = 1;
  h.header = 0x53726448;
  h.version = 0x020f;
  h.loadflags = LOADED_HIGH;
  h.xloadflags = XLF_KERNEL_64;
  h.init_size = 0x10000;
  h.initrd_addr_max = 0x7fffffff;
  std::memcpy(bz.data() + 0x1f1, &h, sizeof(h));
  bz[1024] = 0xab;  // first byte of the protected-mode kernel
  auto k = LoadKernel(*mem, bz);
  REQUIRE(k.ok());
  REQUIRE(k->entry == 0x100200);
  REQUIRE(k->setup.has_value());
  REQUIRE(*mem->ReadObj<uint8_t>(GuestAddress(0x100000)) == 0xab);

  h.version = 0x0204;
  std::memcpy(bz.data() + 0x1f1, &h, sizeof(h));
  REQUIRE(Mentions(LoadKernel(*mem, bz).status(), "older than 2.06"));
  h.version = 0x020f;
  h.xloadflags = 0;
  std::memcpy(bz.data() + 0x1f1, &h, sizeof(h));
  REQUIRE(Mentions(LoadKernel(*mem, bz).status(), "64-bit entry"));
  h.xloadflags = XLF_KERNEL_64;
  h.setup_sects = 200;
  std::memcpy(bz.data() + 0x1f1, &h, sizeof(h));
  REQUIRE(Mentions(LoadKernel(*mem, bz).status(), "setup_sects"));
  h.setup_sects = 1;
  h.init_size = 0x40000000;
  std::memcpy(bz.data() + 0x1f1, &h, sizeof(h));
  REQUIRE(Mentions(LoadKernel(*mem, bz).status(), "init_size"));
}

TEST_CASE("Initrd goes page-aligned at the top of low RAM") {
  auto mem = Ram(64 << 20);
  LoadedKernel k;
  k.image_end = 0x300000;
  std::vector<uint8_t> rd(10000, 0x5a);
  auto loc = LoadInitrd(*mem, rd, k);
  REQUIRE(loc.ok());
  REQUIRE(loc->address % 4096 == 0);
  REQUIRE(loc->address + 12288 == (64u << 20));
  REQUIRE(*mem->ReadObj<uint8_t>(GuestAddress(loc->address + 9999)) == 0x5a);
  std::vector<uint8_t> huge(63 << 20);
  REQUIRE(Mentions(LoadInitrd(*mem, huge, k).status(), "does not fit"));
}

TEST_CASE("e820 reserves the EBDA and BIOS area and follows the MMIO hole") {
  auto mem = Ram(4ULL << 30);
  auto map = BuildE820(*mem);
  REQUIRE(map.size() == 4);
  REQUIRE(map[0].addr == 0);
  REQUIRE(map[0].size == kEbdaStart);
  REQUIRE(map[1].type == E820Type::kReserved);
  REQUIRE(map[1].addr + map[1].size == kHighMemoryStart);
  REQUIRE(map[2].addr + map[2].size == vm_memory::kMmioHoleStart);
  REQUIRE(map[3].addr == vm_memory::kMmioHoleEnd);
  REQUIRE(map[3].size == (1ULL << 30));
}

TEST_CASE("PVH start info: magic, command line, memmap, initrd module") {
  auto mem = Ram(64 << 20);
  LoadedKernel k;
  k.protocol = BootProtocol::kPvh;
  k.entry = 0x100000;
  BootConfig cfg;
  cfg.cmdline = "console=ttyS0 quiet";
  cfg.initrd = InitrdLocation{0x3000000, 1234};
  cfg.rsdp = kRsdpAddress;
  REQUIRE(WriteBootInfo(*mem, k, cfg).ok());
  auto info = mem->ReadObj<HvmStartInfo>(GuestAddress(kPvhStartInfoAddress));
  REQUIRE(info->magic == kHvmStartMagic);
  REQUIRE(info->version == 1);
  REQUIRE(info->memmap_entries == 3);
  REQUIRE(info->rsdp_paddr == kRsdpAddress);
  REQUIRE(info->nr_modules == 1);
  auto mod = mem->ReadObj<HvmModlistEntry>(GuestAddress(info->modlist_paddr));
  REQUIRE(mod->paddr == 0x3000000);
  REQUIRE(mod->size == 1234);
  std::vector<uint8_t> cmd(cfg.cmdline.size() + 1);
  REQUIRE(mem->Read(GuestAddress(info->cmdline_paddr), cmd).ok());
  REQUIRE(std::string(reinterpret_cast<char*>(cmd.data())) == cfg.cmdline);
  auto last = mem->ReadObj<HvmMemmapEntry>(
      GuestAddress(info->memmap_paddr + 2 * sizeof(HvmMemmapEntry)));
  REQUIRE(last->addr == kHighMemoryStart);
  REQUIRE(last->type == 1);

  kvm_sregs initial = {};
  auto st = SetupBootCpu(*mem, k, initial);
  REQUIRE(st.ok());
  REQUIRE(st->regs.rip == 0x100000);
  REQUIRE(st->regs.rbx == kPvhStartInfoAddress);
  REQUIRE(st->sregs.cr0 == 0x11);  // protected mode, paging off
  REQUIRE(st->sregs.cs.db == 1);
  REQUIRE(st->sregs.cs.l == 0);
  REQUIRE(st->sregs.cs.limit == 0xffffffff);
}

TEST_CASE("Linux zero page and long-mode state") {
  auto mem = Ram(64 << 20);
  LoadedKernel k;
  k.protocol = BootProtocol::kLinux64;
  k.entry = 0x1000000;
  BootConfig cfg;
  cfg.cmdline = "console=ttyS0";
  cfg.initrd = InitrdLocation{0x3000000, 4096};
  REQUIRE(WriteBootInfo(*mem, k, cfg).ok());
  auto bp = mem->ReadObj<boot_params>(GuestAddress(kZeroPageAddress));
  REQUIRE(bp->hdr.header == 0x53726448);
  REQUIRE(bp->hdr.boot_flag == 0xaa55);
  REQUIRE(bp->hdr.type_of_loader == 0xff);
  REQUIRE(bp->hdr.cmd_line_ptr == kCmdlineAddress);
  REQUIRE(bp->hdr.ramdisk_image == 0x3000000);
  REQUIRE(bp->e820_entries == 3);
  kvm_sregs initial = {};
  auto st = SetupBootCpu(*mem, k, initial);
  REQUIRE(st.ok());
  REQUIRE(st->regs.rsi == kZeroPageAddress);
  REQUIRE(st->sregs.cs.l == 1);
  REQUIRE(st->sregs.cs.selector == 0x10);
  REQUIRE(st->sregs.ds.selector == 0x18);
  REQUIRE((st->sregs.efer & 0x500) == 0x500);
  // Identity map: 3 GiB + 2 MiB maps to itself with a 2 MiB page.
  uint64_t pd_entry =
      *mem->ReadObj<uint64_t>(GuestAddress(kPdAddress + 3 * 4096 + 8));
  REQUIRE(pd_entry == ((3ULL << 30) + (2 << 20) | 0x83));
}

TEST_CASE("An overlong command line is refused") {
  auto mem = Ram(16 << 20);
  LoadedKernel k;
  BootConfig cfg;
  cfg.cmdline = std::string(kCmdlineMaxSize, 'a');
  REQUIRE(Mentions(WriteBootInfo(*mem, k, cfg), "command line"));
}
