#include "vcpu/boot/kernel_loader.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "vcpu/boot/layout.h"
#include "vm-memory/layout.h"
#include "vm-memory/unique_fd.h"

namespace vcpu::boot {
namespace {

using vm_memory::GuestAddress;

constexpr uint32_t kXenElfnotePhys32Entry = 18;
constexpr uint16_t kMinBootProtocol = 0x0206;  // cmdline_size, 2.06+
constexpr uint32_t kHdrSMagic = 0x53726448;     // "HdrS"
constexpr size_t kMaxProgramHeaders = 64;

absl::Status ElfError(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("kernel ELF: ", what));
}

template <typename T>
bool ReadAt(std::span<const uint8_t> image, uint64_t offset, T* out) {
  if (offset > image.size() || image.size() - offset < sizeof(T)) return false;
  std::memcpy(out, image.data() + offset, sizeof(T));
  return true;
}

// An ELF file header or program header, ELF32 or ELF64, widened to 64 bits.
struct ElfHeader {
  bool is64 = false;
  uint64_t entry = 0;
  uint64_t phoff = 0;
  uint16_t phnum = 0;
};
struct ProgramHeader {
  uint32_t type = 0;
  uint64_t offset = 0;
  uint64_t paddr = 0;
  uint64_t filesz = 0;
  uint64_t memsz = 0;
};

// Checks what ELF32 (i386, as 32-bit PVH images are) and ELF64 (x86-64)
// share: byte order, machine, type, program header size and count.
template <typename Ehdr, typename Phdr>
absl::StatusOr<ElfHeader> ParseHeader(std::span<const uint8_t> image,
                                      uint16_t machine, const char* machine_name) {
  Ehdr eh;
  if (!ReadAt(image, 0, &eh)) return ElfError("truncated ELF header");
  if (eh.e_ident[EI_DATA] != ELFDATA2LSB) return ElfError("not little-endian (EI_DATA)");
  if (eh.e_machine != machine) {
    return ElfError(absl::StrCat("e_machine is ", eh.e_machine, ", not ", machine_name,
                                 " (", machine, ")"));
  }
  if (eh.e_type != ET_EXEC) return ElfError("e_type is not ET_EXEC");
  if (eh.e_phentsize != sizeof(Phdr)) return ElfError("bad e_phentsize");
  if (eh.e_phnum == 0 || eh.e_phnum > kMaxProgramHeaders) {
    return ElfError(absl::StrCat("e_phnum ", eh.e_phnum, " out of range"));
  }
  return ElfHeader{sizeof(Ehdr) == sizeof(Elf64_Ehdr), eh.e_entry, eh.e_phoff, eh.e_phnum};
}

absl::StatusOr<ElfHeader> ParseHeader(std::span<const uint8_t> image) {
  if (image.size() <= EI_CLASS) return ElfError("truncated ELF header");
  switch (image[EI_CLASS]) {
    case ELFCLASS64:
      return ParseHeader<Elf64_Ehdr, Elf64_Phdr>(image, EM_X86_64, "x86-64");
    case ELFCLASS32:
      return ParseHeader<Elf32_Ehdr, Elf32_Phdr>(image, EM_386, "i386");
    default:
      return ElfError(absl::StrCat("EI_CLASS ", image[EI_CLASS],
                                   " is neither 32-bit (1) nor 64-bit (2)"));
  }
}

template <typename Phdr>
std::optional<ProgramHeader> ReadPhdr(std::span<const uint8_t> image, uint64_t at) {
  Phdr ph;
  if (!ReadAt(image, at, &ph)) return std::nullopt;
  return ProgramHeader{ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz};
}

absl::StatusOr<ProgramHeader> ReadProgramHeader(std::span<const uint8_t> image,
                                                const ElfHeader& eh, uint16_t i) {
  const uint64_t size = eh.is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
  // e_phoff is the file's word: at most 2^64-1, and i * size < 2^22.
  const uint64_t at = eh.phoff + uint64_t{i} * size;
  std::optional<ProgramHeader> ph;
  if (at >= eh.phoff) {
    ph = eh.is64 ? ReadPhdr<Elf64_Phdr>(image, at) : ReadPhdr<Elf32_Phdr>(image, at);
  }
  if (!ph) return ElfError(absl::StrCat("program header ", i, " is outside the file"));
  return *ph;
}

// Finds the PVH entry in a PT_NOTE segment, if there is one. (ELF32 and
// ELF64 note headers have the same layout: three 32-bit words.)
std::optional<uint64_t> FindPvhEntry(std::span<const uint8_t> image,
                                     const ProgramHeader& ph) {
  if (ph.offset > image.size() || ph.filesz > image.size() - ph.offset) {
    return std::nullopt;
  }
  uint64_t pos = ph.offset;
  const uint64_t end = ph.offset + ph.filesz;
  while (end - pos >= sizeof(Elf64_Nhdr)) {
    Elf64_Nhdr nh{};
    if (!ReadAt(image, pos, &nh)) break;
    uint64_t name_off = pos + sizeof(nh);
    uint64_t desc_off = name_off + ((uint64_t{nh.n_namesz} + 3) & ~3ULL);
    uint64_t next = desc_off + ((uint64_t{nh.n_descsz} + 3) & ~3ULL);
    if (next > end || next <= pos) break;
    if (nh.n_type == kXenElfnotePhys32Entry && nh.n_namesz == 4 &&
        std::memcmp(image.data() + name_off, "Xen", 4) == 0) {
      uint32_t e32 = 0;
      uint64_t e64 = 0;
      if (nh.n_descsz == 4 && ReadAt(image, desc_off, &e32)) return e32;
      if (nh.n_descsz == 8 && ReadAt(image, desc_off, &e64)) return e64;
    }
    pos = next;
  }
  return std::nullopt;
}

// Copies one PT_LOAD segment into guest RAM (above 1 MiB) and zeroes its
// tail; returns the guest-physical address just past it.
absl::StatusOr<uint64_t> LoadSegment(vm_memory::GuestMemory& mem,
                                     std::span<const uint8_t> image,
                                     const ProgramHeader& ph, uint16_t i) {
  if (ph.filesz > ph.memsz) {
    return ElfError(absl::StrCat("segment ", i, ": p_filesz > p_memsz"));
  }
  if (ph.offset > image.size() || ph.filesz > image.size() - ph.offset) {
    return ElfError(absl::StrFormat(
        "segment %u: file range 0x%x+0x%x is outside the %u-byte file", i,
        ph.offset, ph.filesz, image.size()));
  }
  GuestAddress at(ph.paddr);
  if (ph.paddr < kHighMemoryStart || !mem.CheckRange(at, ph.memsz)) {
    return ElfError(absl::StrFormat(
        "segment %u: 0x%x+0x%x does not fit in guest RAM above 1 MiB "
        "(give the VM more memory?)",
        i, ph.paddr, ph.memsz));
  }
  absl::Status s = mem.Write(at, image.subspan(ph.offset, ph.filesz));
  if (!s.ok()) return s;
  s = mem.ZeroRange(GuestAddress(ph.paddr + ph.filesz), ph.memsz - ph.filesz);
  if (!s.ok()) return s;
  return ph.paddr + ph.memsz;
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> ReadFileCapped(const std::string& path,
                                                    uint64_t max_bytes) {
  vm_memory::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is ", st.st_size, " bytes, more than the ", max_bytes,
        " allowed"));
  }
  std::vector<uint8_t> data(st.st_size);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::read(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, absl::StrCat("reading ", path));
    if (n == 0) break;
    done += n;
  }
  data.resize(done);
  return data;
}

absl::StatusOr<LoadedKernel> LoadKernel(vm_memory::GuestMemory& mem,
                                        std::span<const uint8_t> image,
                                        ElfEntry elf_entry) {
  if (image.size() >= 4 && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0) {
    return LoadElf(mem, image, elf_entry);
  }
  uint32_t magic = 0;
  if (ReadAt(image, 0x202, &magic) && magic == kHdrSMagic) {
    return LoadBzImage(mem, image);
  }
  return absl::InvalidArgumentError(
      "kernel is neither an ELF file nor a bzImage (no ELF magic, no 'HdrS' "
      "at offset 0x202)");
}

absl::StatusOr<LoadedKernel> LoadElf(vm_memory::GuestMemory& mem,
                                     std::span<const uint8_t> image,
                                     ElfEntry elf_entry) {
  auto eh = ParseHeader(image);
  if (!eh.ok()) return eh.status();
  LoadedKernel k;
  std::optional<uint64_t> pvh_entry;
  bool loaded_any = false;
  for (uint16_t i = 0; i < eh->phnum; ++i) {
    auto ph = ReadProgramHeader(image, *eh, i);
    if (!ph.ok()) return ph.status();
    if (ph->type == PT_NOTE && !pvh_entry) pvh_entry = FindPvhEntry(image, *ph);
    if (ph->type != PT_LOAD || ph->memsz == 0) continue;
    auto seg_end = LoadSegment(mem, image, *ph, i);
    if (!seg_end.ok()) return seg_end.status();
    k.image_end = std::max(k.image_end, *seg_end);
    loaded_any = true;
  }
  if (!loaded_any) return ElfError("no loadable (PT_LOAD) segment");
  if (pvh_entry && elf_entry == ElfEntry::kPreferPvh) {
    k.protocol = BootProtocol::kPvh;
    k.entry = *pvh_entry;
  } else if (!eh->is64) {
    // 32-bit code cannot be entered through the 64-bit Linux boot protocol.
    return ElfError(pvh_entry ? "a 32-bit ELF boots only through its PVH entry"
                              : "a 32-bit ELF needs a PVH entry note "
                                "(XEN_ELFNOTE_PHYS32_ENTRY, type 18)");
  } else {
    k.protocol = BootProtocol::kLinux64;
    k.entry = eh->entry;
  }
  if (!mem.CheckRange(GuestAddress(k.entry), 1)) {
    return ElfError(absl::StrFormat("entry point 0x%x is not in guest RAM", k.entry));
  }
  return k;
}

absl::StatusOr<LoadedKernel> LoadBzImage(vm_memory::GuestMemory& mem,
                                         std::span<const uint8_t> image) {
  setup_header hdr;
  if (!ReadAt(image, 0x1f1, &hdr)) {
    return absl::InvalidArgumentError("bzImage: truncated setup header");
  }
  if (hdr.header != kHdrSMagic) {
    return absl::InvalidArgumentError("bzImage: no 'HdrS' magic at 0x202");
  }
  if (hdr.version < kMinBootProtocol) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage: boot protocol %x.%02x is older than 2.06", hdr.version >> 8,
        hdr.version & 0xff));
  }
  if (!(hdr.loadflags & LOADED_HIGH)) {
    return absl::InvalidArgumentError("bzImage: not a bzImage (LOADED_HIGH clear)");
  }
  if (hdr.version < 0x020c || !(hdr.xloadflags & XLF_KERNEL_64)) {
    return absl::InvalidArgumentError(
        "bzImage: kernel has no 64-bit entry point (xloadflags XLF_KERNEL_64)");
  }
  uint64_t setup_sects = hdr.setup_sects == 0 ? 4 : hdr.setup_sects;
  uint64_t kernel_offset = (setup_sects + 1) * 512;
  if (kernel_offset >= image.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bzImage: setup_sects ", setup_sects, " puts the kernel past the end of the file"));
  }
  std::span<const uint8_t> payload = image.subspan(kernel_offset);
  uint64_t need = std::max<uint64_t>(payload.size(), hdr.init_size);
  if (!mem.CheckRange(GuestAddress(kHighMemoryStart), need)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage: needs 0x%x bytes of RAM at 1 MiB (init_size); give the VM "
        "more memory",
        need));
  }
  absl::Status s = mem.Write(GuestAddress(kHighMemoryStart), payload);
  if (!s.ok()) return s;
  LoadedKernel k;
  k.protocol = BootProtocol::kLinux64;
  k.entry = kHighMemoryStart + 0x200;  // startup_64
  k.image_end = kHighMemoryStart + need;
  k.setup = hdr;
  return k;
}

absl::StatusOr<InitrdLocation> LoadInitrd(vm_memory::GuestMemory& mem,
                                          std::span<const uint8_t> initrd,
                                          const LoadedKernel& kernel) {
  uint64_t max_end = vm_memory::kMmioHoleStart;
  if (kernel.setup && kernel.setup->initrd_addr_max != 0) {
    max_end = std::min<uint64_t>(max_end, uint64_t{kernel.setup->initrd_addr_max} + 1);
  }
  const vm_memory::GuestRegion* low = mem.FindRegion(GuestAddress(0));
  if (low == nullptr) return absl::InternalError("no RAM at address 0");
  max_end = std::min<uint64_t>(max_end, low->end().value);
  uint64_t size = initrd.size();
  uint64_t aligned = (size + 0xfff) & ~0xfffULL;
  uint64_t floor = (kernel.image_end + 0xfff) & ~0xfffULL;
  if (aligned > max_end || max_end - aligned < floor) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "initrd of %u bytes does not fit between the kernel (ends 0x%x) and "
        "0x%x; give the VM more memory",
        size, kernel.image_end, max_end));
  }
  uint64_t addr = (max_end - aligned) & ~0xfffULL;
  absl::Status s = mem.Write(GuestAddress(addr), initrd);
  if (!s.ok()) return s;
  return InitrdLocation{addr, size};
}

}  // namespace vcpu::boot
