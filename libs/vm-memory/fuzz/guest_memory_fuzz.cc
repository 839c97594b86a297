// Fuzzes GuestMemory's access paths: arbitrary (address, length) pairs for
// Read/Write/GetSlices/CheckRange against a layout with a gap, adjacent
// regions and a region near the top of the address space. Every access must
// either succeed entirely inside RAM or fail cleanly.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "vm-memory/guest_memory.h"

using namespace vm_memory;

namespace {

GuestMemory& Memory() {
  static std::unique_ptr<GuestMemory> mem = [] {
    std::vector<RegionSpec> layout = {
        {GuestAddress(0), 0x4000},
        {GuestAddress(0x4000), 0x4000},
        {GuestAddress(0x100000), 0x2000},
        {GuestAddress(0xffff'ffff'ffff'0000ULL), 0x1000}};
    return std::move(*GuestMemory::Create(layout));
  }();
  return *mem;
}

uint64_t Take64(const uint8_t*& data, size_t& size) {
  uint64_t v = 0;
  size_t n = size < 8 ? size : 8;
  std::memcpy(&v, data, n);
  data += n;
  size -= n;
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  GuestMemory& mem = Memory();
  std::vector<uint8_t> buf;
  while (size >= 9) {
    uint8_t op = *data++;
    --size;
    GuestAddress addr(Take64(data, size));
    uint64_t len = Take64(data, size) % 0x10000;  // keep buffers small
    bool in_ram = mem.CheckRange(addr, len);
    buf.assign(len, op);
    switch (op % 4) {
      case 0:
        if (mem.Read(addr, buf).ok() != in_ram) __builtin_trap();
        break;
      case 1:
        if (mem.Write(addr, buf).ok() != in_ram) __builtin_trap();
        break;
      case 2: {
        auto slices = mem.GetSlices(addr, len, Access::kWrite);
        if (slices.ok() != in_ram) __builtin_trap();
        if (slices.ok()) {
          uint64_t total = 0;
          for (const auto& s : *slices) {
            s.CopyFrom(std::span<const uint8_t>(buf.data() + total, s.size()));
            total += s.size();
          }
          if (total != len) __builtin_trap();
        }
        break;
      }
      case 3: {
        auto v = mem.ReadObj<uint64_t>(addr);
        if (v.ok() != mem.CheckRange(addr, 8)) __builtin_trap();
        break;
      }
    }
  }
  return 0;
}
