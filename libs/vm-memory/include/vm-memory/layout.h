// x86-64 guest RAM layout with a 32-bit MMIO hole.
//
// RAM starts at 0 and runs up to kMmioHoleStart (3 GiB); the hole
// [3 GiB, 4 GiB) is left for device MMIO, the LAPIC/IOAPIC and PCI; any RAM
// beyond 3 GiB is placed from 4 GiB up.
//
//   std::vector<RegionSpec> layout = X86RamLayout(6ULL << 30);
//   // -> [0, 3 GiB) and [4 GiB, 7 GiB)
#ifndef VM_MEMORY_LAYOUT_H_
#define VM_MEMORY_LAYOUT_H_

#include <cstdint>
#include <vector>

#include "vm-memory/guest_memory.h"

namespace vm_memory {

inline constexpr uint64_t kMmioHoleStart = 0xC000'0000ULL;  // 3 GiB
inline constexpr uint64_t kMmioHoleEnd = 0x1'0000'0000ULL;  // 4 GiB

// Splits `ram_bytes` of RAM around the MMIO hole. An empty result for 0.
std::vector<RegionSpec> X86RamLayout(uint64_t ram_bytes);

}  // namespace vm_memory

#endif  // VM_MEMORY_LAYOUT_H_
