// Loads a guest kernel into guest memory: ELF (vmlinux or a PVH ELF such as
// kindling's test guests) or a bzImage.
//
// An ELF with a PVH note (XEN_ELFNOTE_PHYS32_ENTRY) boots through PVH,
// entered in 32-bit protected mode; any other x86-64 ELF and every bzImage
// boot through Linux's 64-bit boot protocol.
//
//   ASSIGN_OR_RETURN(std::vector<uint8_t> image, ReadFileCapped(path, 1 << 30));
//   ASSIGN_OR_RETURN(LoadedKernel k, LoadKernel(mem, image));
//   ASSIGN_OR_RETURN(InitrdLocation rd, LoadInitrd(mem, initrd, k));
#ifndef VCPU_BOOT_KERNEL_LOADER_H_
#define VCPU_BOOT_KERNEL_LOADER_H_

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vm-memory/guest_memory.h"

namespace vcpu::boot {

enum class BootProtocol { kLinux64, kPvh };

struct LoadedKernel {
  BootProtocol protocol = BootProtocol::kLinux64;
  uint64_t entry = 0;      // 64-bit entry, or the 32-bit PVH entry
  uint64_t image_end = 0;  // one past the highest byte the kernel occupies
  // bzImage only: its setup header, to copy into boot_params.
  std::optional<setup_header> setup;
};

// Which entry to use for an ELF that offers both (a vmlinux with a PVH
// note): PVH by default, or Linux's 64-bit boot protocol.
enum class ElfEntry { kPreferPvh, kLinux64 };

struct InitrdLocation {
  uint64_t address = 0;
  uint64_t size = 0;
};

// Reads at most `max_bytes` of a file; larger files are an error.
absl::StatusOr<std::vector<uint8_t>> ReadFileCapped(const std::string& path,
                                                    uint64_t max_bytes);

absl::StatusOr<LoadedKernel> LoadKernel(
    vm_memory::GuestMemory& mem, std::span<const uint8_t> image,
    ElfEntry elf_entry = ElfEntry::kPreferPvh);
absl::StatusOr<LoadedKernel> LoadElf(vm_memory::GuestMemory& mem,
                                     std::span<const uint8_t> image,
                                     ElfEntry elf_entry = ElfEntry::kPreferPvh);
absl::StatusOr<LoadedKernel> LoadBzImage(vm_memory::GuestMemory& mem,
                                         std::span<const uint8_t> image);

// Places the initrd page-aligned at the top of RAM below the MMIO hole (and
// below the kernel's initrd_addr_max for a bzImage), above the kernel.
absl::StatusOr<InitrdLocation> LoadInitrd(vm_memory::GuestMemory& mem,
                                          std::span<const uint8_t> initrd,
                                          const LoadedKernel& kernel);

}  // namespace vcpu::boot

#endif  // VCPU_BOOT_KERNEL_LOADER_H_
