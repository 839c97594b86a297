// The guest's physical memory map (e820), derived from its RAM regions.
//
// Low RAM stops at the EBDA (0x9fc00); [0x9fc00, 1 MiB) is reserved for the
// MP table, ACPI tables and legacy ROM space; the rest of each region is RAM.
//
//   std::vector<E820Entry> map = BuildE820(mem);
#ifndef VCPU_BOOT_E820_H_
#define VCPU_BOOT_E820_H_

#include <cstdint>
#include <vector>

#include "vm-memory/guest_memory.h"

namespace vcpu::boot {

enum class E820Type : uint32_t { kRam = 1, kReserved = 2, kAcpi = 3 };

struct E820Entry {
  uint64_t addr;
  uint64_t size;
  E820Type type;
};

std::vector<E820Entry> BuildE820(const vm_memory::GuestMemory& mem);

}  // namespace vcpu::boot

#endif  // VCPU_BOOT_E820_H_
