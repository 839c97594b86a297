#include "vcpu/boot/e820.h"

#include "vcpu/boot/layout.h"

namespace vcpu::boot {

std::vector<E820Entry> BuildE820(const vm_memory::GuestMemory& mem) {
  std::vector<E820Entry> map;
  for (const vm_memory::GuestRegion* r : mem.regions()) {
    uint64_t start = r->start().value;
    uint64_t end = r->end().value;
    if (start < kEbdaStart) {
      uint64_t low_end = end < kEbdaStart ? end : kEbdaStart;
      map.push_back({start, low_end - start, E820Type::kRam});
      start = low_end;
    }
    if (start < kHighMemoryStart && end > start) {
      uint64_t res_end = end < kHighMemoryStart ? end : kHighMemoryStart;
      map.push_back({start, res_end - start, E820Type::kReserved});
      start = res_end;
    }
    if (end > start) map.push_back({start, end - start, E820Type::kRam});
  }
  return map;
}

}  // namespace vcpu::boot
