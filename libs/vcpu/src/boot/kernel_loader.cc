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

// Finds the PVH entry in a PT_NOTE segment, if there is one.
std::optional<uint64_t> FindPvhEntry(std::span<const uint8_t> image,
                                     const Elf64_Phdr& ph) {
  if (ph.p_offset > image.size() || ph.p_filesz > image.size() - ph.p_offset) {
    return std::nullopt;
  }
  uint64_t pos = ph.p_offset;
  const uint64_t end = ph.p_offset + ph.p_filesz;
  while (end - pos >= sizeof(Elf64_Nhdr)) {
    Elf64_Nhdr nh;
    ReadAt(image, pos, &nh);
    uint64_t name_off = pos + sizeof(nh);
    uint64_t desc_off = name_off + ((uint64_t{nh.n_namesz} + 3) & ~3ULL);
    uint64_t next = desc_off + ((uint64_t{nh.n_descsz} + 3) & ~3ULL);
    if (next > end || next <= pos) break;
    if (nh.n_type == kXenElfnotePhys32Entry && nh.n_namesz == 4 &&
        std::memcmp(image.data() + name_off, "Xen", 4) == 0) {
      if (nh.n_descsz == 4) {
        uint32_t e;
        ReadAt(image, desc_off, &e);
        return e;
      }
      if (nh.n_descsz == 8) {
        uint64_t e;
        ReadAt(image, desc_off, &e);
        return e;
      }
    }
    pos = next;
  }
  return std::nullopt;
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
  Elf64_Ehdr eh;
  if (!ReadAt(image, 0, &eh)) return ElfError("truncated ELF header");
  if (eh.e_ident[EI_CLASS] != ELFCLASS64) return ElfError("not a 64-bit ELF (EI_CLASS)");
  if (eh.e_ident[EI_DATA] != ELFDATA2LSB) return ElfError("not little-endian (EI_DATA)");
  if (eh.e_machine != EM_X86_64) {
    return ElfError(absl::StrCat("e_machine is ", eh.e_machine, ", not x86-64 (62)"));
  }
  if (eh.e_type != ET_EXEC) return ElfError("e_type is not ET_EXEC");
  if (eh.e_phentsize != sizeof(Elf64_Phdr)) return ElfError("bad e_phentsize");
  if (eh.e_phnum == 0 || eh.e_phnum > kMaxProgramHeaders) {
    return ElfError(absl::StrCat("e_phnum ", eh.e_phnum, " out of range"));
  }
  LoadedKernel k;
  std::optional<uint64_t> pvh_entry;
  bool loaded_any = false;
  for (uint16_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    if (!ReadAt(image, eh.e_phoff + uint64_t{i} * sizeof(ph), &ph)) {
      return ElfError(absl::StrCat("program header ", i, " is outside the file"));
    }
    if (ph.p_type == PT_NOTE && !pvh_entry) pvh_entry = FindPvhEntry(image, ph);
    if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
    if (ph.p_filesz > ph.p_memsz) {
      return ElfError(absl::StrCat("segment ", i, ": p_filesz > p_memsz"));
    }
    if (ph.p_offset > image.size() || ph.p_filesz > image.size() - ph.p_offset) {
      return ElfError(absl::StrFormat(
          "segment %u: file range 0x%x+0x%x is outside the %u-byte file", i,
          ph.p_offset, ph.p_filesz, image.size()));
    }
    GuestAddress at(ph.p_paddr);
    if (ph.p_paddr < kHighMemoryStart || !mem.CheckRange(at, ph.p_memsz)) {
      return ElfError(absl::StrFormat(
          "segment %u: 0x%x+0x%x does not fit in guest RAM above 1 MiB "
          "(give the VM more memory?)",
          i, ph.p_paddr, ph.p_memsz));
    }
    absl::Status s = mem.Write(at, image.subspan(ph.p_offset, ph.p_filesz));
    if (!s.ok()) return s;
    s = mem.ZeroRange(GuestAddress(ph.p_paddr + ph.p_filesz),
                      ph.p_memsz - ph.p_filesz);
    if (!s.ok()) return s;
    k.image_end = std::max(k.image_end, ph.p_paddr + ph.p_memsz);
    loaded_any = true;
  }
  if (!loaded_any) return ElfError("no loadable (PT_LOAD) segment");
  if (pvh_entry && elf_entry == ElfEntry::kPreferPvh) {
    k.protocol = BootProtocol::kPvh;
    k.entry = *pvh_entry;
  } else {
    k.protocol = BootProtocol::kLinux64;
    k.entry = eh.e_entry;
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
