#include "vm-memory/layout.h"

#include <algorithm>

namespace vm_memory {

std::vector<RegionSpec> X86RamLayout(uint64_t ram_bytes) {
  std::vector<RegionSpec> layout;
  uint64_t low = std::min(ram_bytes, kMmioHoleStart);
  if (low > 0) layout.push_back({GuestAddress(0), low});
  if (ram_bytes > low) {
    layout.push_back({GuestAddress(kMmioHoleEnd), ram_bytes - low});
  }
  return layout;
}

}  // namespace vm_memory
