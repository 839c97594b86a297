// Shared by queue.cc (split rings) and queue_packed.cc (packed rings).
#ifndef VIRTIO_SRC_QUEUE_UTIL_H_
#define VIRTIO_SRC_QUEUE_UTIL_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "vm-memory/guest_memory.h"

namespace virtio::queue_internal {

// QEMU's limit too: an indirect table may hold more descriptors than the
// queue has slots (Linux builds them from the request's segment count).
inline constexpr uint32_t kMaxIndirect = 1024;

inline constexpr uint64_t kRingHeader = 4;  // split rings: flags, idx

inline std::string Hex(uint64_t v) { return absl::StrCat("0x", absl::Hex(v)); }

// The ring [addr, addr + len) must be RAM in one region, so the device can
// never be steered into MMIO or past the end of a mapping.
inline absl::Status CheckRing(const vm_memory::GuestMemory& mem, const char* what,
                              vm_memory::GuestAddress addr, uint64_t len, uint64_t align) {
  if (!addr.IsAligned(align)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " at ", Hex(addr.value), " is not ", align, "-byte aligned"));
  }
  const vm_memory::GuestRegion* r = mem.FindRegion(addr);
  std::optional<vm_memory::GuestAddress> end = addr.CheckedAdd(len);
  if (r == nullptr || !end || *end > r->end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " at ", Hex(addr.value), " (", len, " bytes) is not in guest RAM"));
  }
  return absl::OkStatus();
}

}  // namespace virtio::queue_internal

#endif  // VIRTIO_SRC_QUEUE_UTIL_H_
