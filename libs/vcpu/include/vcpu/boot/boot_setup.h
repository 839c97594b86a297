// Writes what a kernel expects to find at entry — the command line, Linux's
// boot_params ("zero page") or PVH's hvm_start_info, GDT and page tables —
// and computes the boot vCPU's registers.
//
//   BootConfig cfg{.cmdline = "console=ttyS0", .initrd = rd, .rsdp = rsdp};
//   RETURN_IF_ERROR(WriteBootInfo(mem, kernel, cfg));
//   ASSIGN_OR_RETURN(kvm_sregs sregs, vcpu.GetSregs());
//   ASSIGN_OR_RETURN(BootCpuState st, SetupBootCpu(mem, kernel, sregs));
//   RETURN_IF_ERROR(vcpu.SetSregs(st.sregs));
//   RETURN_IF_ERROR(vcpu.SetRegs(st.regs));
#ifndef VCPU_BOOT_BOOT_SETUP_H_
#define VCPU_BOOT_BOOT_SETUP_H_

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "vcpu/boot/kernel_loader.h"
#include "vcpu/boot/e820.h"
#include "vm-memory/guest_memory.h"

namespace vcpu::boot {

// PVH's start-of-day structure (Xen public/arch-x86/hvm/start_info.h).
struct HvmStartInfo {
  uint32_t magic;  // kHvmStartMagic
  uint32_t version;
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);

struct HvmModlistEntry {
  uint64_t paddr;
  uint64_t size;
  uint64_t cmdline_paddr;
  uint64_t reserved;
};

struct HvmMemmapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  uint32_t reserved;
};

inline constexpr uint32_t kHvmStartMagic = 0x336ec578;
inline constexpr uint64_t kPvhModlistAddress = 0x6f00;
inline constexpr uint32_t kMaxMemmapEntries = 128;

struct BootConfig {
  std::string cmdline;
  std::optional<InitrdLocation> initrd;
  uint64_t rsdp = 0;  // 0 = none (the guest scans for it)
  // Non-RAM ranges the memory map marks reserved (e.g. PCI ECAM, which
  // Linux only trusts when the map reserves it).
  std::vector<E820Entry> reserved;
};

struct BootCpuState {
  kvm_regs regs;
  kvm_sregs sregs;
};

// Writes the command line and boot_params (Linux) or hvm_start_info (PVH).
absl::Status WriteBootInfo(vm_memory::GuestMemory& mem,
                           const LoadedKernel& kernel, const BootConfig& config);

// Writes the GDT (and, for Linux, identity-mapped page tables for 4 GiB)
// and returns the boot vCPU's registers, starting from `initial` sregs.
absl::StatusOr<BootCpuState> SetupBootCpu(vm_memory::GuestMemory& mem,
                                          const LoadedKernel& kernel,
                                          const kvm_sregs& initial);

}  // namespace vcpu::boot

#endif  // VCPU_BOOT_BOOT_SETUP_H_
