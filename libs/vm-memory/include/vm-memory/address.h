// Distinct address types for guest memory.
//
// A guest physical address, an offset inside one memory region and a host
// virtual address are three different things; mixing them up is the classic
// VMM bug. Each is its own struct over uint64_t with no implicit
// conversions, and arithmetic that can overflow goes through CheckedAdd,
// which returns std::nullopt instead of wrapping:
//
//   GuestAddress base{0x1000};
//   std::optional<GuestAddress> end = base.CheckedAdd(len);
//   if (!end) return absl::OutOfRangeError("address overflow");
#ifndef VM_MEMORY_ADDRESS_H_
#define VM_MEMORY_ADDRESS_H_

#include <compare>
#include <cstdint>
#include <optional>

namespace vm_memory {

namespace internal {
inline std::optional<uint64_t> CheckedAdd(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}
inline std::optional<uint64_t> CheckedSub(uint64_t a, uint64_t b) {
  if (b > a) return std::nullopt;
  return a - b;
}
}  // namespace internal

#define VM_MEMORY_DEFINE_ADDRESS_TYPE(Name)                                \
  struct Name {                                                            \
    uint64_t value = 0;                                                    \
    constexpr Name() = default;                                            \
    constexpr explicit Name(uint64_t v) : value(v) {}                      \
    std::optional<Name> CheckedAdd(uint64_t delta) const {                 \
      auto r = internal::CheckedAdd(value, delta);                         \
      if (!r) return std::nullopt;                                         \
      return Name(*r);                                                     \
    }                                                                      \
    std::optional<Name> CheckedSub(uint64_t delta) const {                 \
      auto r = internal::CheckedSub(value, delta);                         \
      if (!r) return std::nullopt;                                         \
      return Name(*r);                                                     \
    }                                                                      \
    /* Distance from `base` to this address, if base <= this. */           \
    std::optional<uint64_t> OffsetFrom(Name base) const {                  \
      return internal::CheckedSub(value, base.value);                      \
    }                                                                      \
    constexpr bool IsAligned(uint64_t alignment) const {                   \
      return alignment != 0 && value % alignment == 0;                     \
    }                                                                      \
    constexpr auto operator<=>(const Name&) const = default;               \
  }

// An address in the guest's physical address space.
VM_MEMORY_DEFINE_ADDRESS_TYPE(GuestAddress);
// An offset from the start of one guest memory region (and its memfd).
VM_MEMORY_DEFINE_ADDRESS_TYPE(RegionOffset);
// A virtual address in the VMM's own address space.
VM_MEMORY_DEFINE_ADDRESS_TYPE(HostAddress);

#undef VM_MEMORY_DEFINE_ADDRESS_TYPE

}  // namespace vm_memory

#endif  // VM_MEMORY_ADDRESS_H_
