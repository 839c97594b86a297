// Where kindling puts boot structures in guest physical memory (x86-64).
//
// Low memory below 1 MiB holds the boot structures; the kernel loads at
// 1 MiB (bzImage) or where its ELF program headers say; the initrd goes at
// the top of RAM below the 32-bit MMIO hole.
#ifndef VCPU_BOOT_LAYOUT_H_
#define VCPU_BOOT_LAYOUT_H_

#include <cstdint>

namespace vcpu::boot {

inline constexpr uint64_t kGdtAddress = 0x500;
inline constexpr uint64_t kIdtAddress = 0x560;
inline constexpr uint64_t kPvhStartInfoAddress = 0x6000;
inline constexpr uint64_t kPvhMemmapAddress = 0x6040;
inline constexpr uint64_t kZeroPageAddress = 0x7000;  // Linux boot_params
inline constexpr uint64_t kPml4Address = 0x9000;
inline constexpr uint64_t kPdptAddress = 0xa000;
inline constexpr uint64_t kPdAddress = 0xb000;  // 4 pages: 4 GiB of 2 MiB
inline constexpr uint64_t kBootStackTop = 0x8ff0;
inline constexpr uint64_t kCmdlineAddress = 0x20000;
inline constexpr uint64_t kCmdlineMaxSize = 0x10000;
inline constexpr uint64_t kEbdaStart = 0x9fc00;  // MP table lives here
inline constexpr uint64_t kRsdpAddress = 0xe0000;
inline constexpr uint64_t kMpConfigAddress = 0xf0000;
inline constexpr uint64_t kMpConfigEnd = 0xfc000;
inline constexpr uint64_t kAcpiTablesAddress = 0xe0100;
inline constexpr uint64_t kAcpiTablesEnd = 0xf0000;
inline constexpr uint64_t kHighMemoryStart = 0x100000;  // 1 MiB
// Boot structures above need RAM up to here, and the kernel above it.
inline constexpr uint64_t kMinimumRam = 2 << 20;

inline constexpr uint64_t kIoapicAddress = 0xfec00000;
inline constexpr uint64_t kLapicAddress = 0xfee00000;

}  // namespace vcpu::boot

#endif  // VCPU_BOOT_LAYOUT_H_
