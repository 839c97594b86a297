// KVM ioctl layouts that Debian's C++ view of <linux/kvm.h> gets wrong.
//
// Linux 6.1's uapi headers declare flexible arrays with
// __DECLARE_FLEX_ARRAY, which in C++ adds an empty struct member: sizeof
// grows (kvm_cpuid2: 8 in C, 12 in C++), the array moves, and every ioctl
// number built from sizeof(struct ...) changes, so the kernel answers
// EINVAL. Found by running kindling under nested KVM; upstream later fixed
// the macro for C++. Here each affected header has an explicit C layout and
// the ioctl numbers are built from it.
#ifndef VCPU_SRC_KVM_ABI_H_
#define VCPU_SRC_KVM_ABI_H_

#include <linux/kvm.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace vcpu::abi {

struct Cpuid2Header {  // struct kvm_cpuid2 without entries[]
  uint32_t nent;
  uint32_t padding;
};
struct MsrsHeader {  // struct kvm_msrs
  uint32_t nmsrs;
  uint32_t pad;
};
struct MsrListHeader {  // struct kvm_msr_list
  uint32_t nmsrs;
};
struct IrqRoutingHeader {  // struct kvm_irq_routing
  uint32_t nr;
  uint32_t flags;
};
struct Xsave {  // struct kvm_xsave's fixed part
  uint32_t region[1024];
};
struct StatsDesc {  // struct kvm_stats_desc without name[]
  uint32_t flags;
  int16_t exponent;
  uint16_t size;
  uint32_t offset;
  uint32_t bucket_size;
};
static_assert(sizeof(Cpuid2Header) == 8);
static_assert(sizeof(StatsDesc) == 16);
static_assert(sizeof(kvm_cpuid_entry2) == 40);
static_assert(sizeof(kvm_msr_entry) == 16);
static_assert(sizeof(kvm_irq_routing_entry) == 48);

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);
inline constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, Cpuid2Header);
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
inline constexpr unsigned long kGetMsrFeatureIndexList = _IOWR(KVMIO, 0x0a, MsrListHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, IrqRoutingHeader);
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, Xsave);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, Xsave);
inline constexpr unsigned long kGetXsave2 = _IOR(KVMIO, 0xcf, Xsave);

// The well-known values, to catch a mistake above.
static_assert(kGetSupportedCpuid == 0xc008ae05);
static_assert(kSetCpuid2 == 0x4008ae90);
static_assert(kGetCpuid2 == 0xc008ae91);
static_assert(kGetMsrs == 0xc008ae88);
static_assert(kGetXsave == 0x9000aea4);

// An ioctl argument made of a fixed header followed by `count` entries,
// laid out as the kernel expects (entries right after the header).
template <typename Header, typename Entry>
class FlexArray {
 public:
  static_assert(sizeof(Header) % alignof(Entry) == 0);
  explicit FlexArray(size_t count)
      : count_(count), buf_(sizeof(Header) + count * sizeof(Entry)) {}
  FlexArray(std::span<const Entry> entries) : FlexArray(entries.size()) {
    std::copy(entries.begin(), entries.end(), this->entries());
  }
  Header* header() { return reinterpret_cast<Header*>(buf_.data()); }
  Entry* entries() {
    return reinterpret_cast<Entry*>(buf_.data() + sizeof(Header));
  }
  // The first `n` entries (clamped to the capacity), e.g. after KVM filled
  // in how many it returned.
  std::vector<Entry> Take(size_t n) {
    return std::vector<Entry>(entries(), entries() + std::min(n, count_));
  }

 private:
  size_t count_;
  std::vector<uint8_t> buf_;  // operator new: aligned for any entry type
};

}  // namespace vcpu::abi

#endif  // VCPU_SRC_KVM_ABI_H_
