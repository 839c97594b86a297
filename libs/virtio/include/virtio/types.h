// Constants from the virtio 1.2 specification shared by every transport
// and device: status bits, reserved feature bits, device IDs.
#ifndef VIRTIO_TYPES_H_
#define VIRTIO_TYPES_H_

#include <cstdint>

namespace virtio {

// Device status (spec 2.1).
inline constexpr uint32_t kStatusAcknowledge = 1;
inline constexpr uint32_t kStatusDriver = 2;
inline constexpr uint32_t kStatusDriverOk = 4;
inline constexpr uint32_t kStatusFeaturesOk = 8;
inline constexpr uint32_t kStatusNeedsReset = 0x40;
inline constexpr uint32_t kStatusFailed = 0x80;

// Reserved feature bits (spec 6).
inline constexpr int kFIndirectDesc = 28;
inline constexpr int kFEventIdx = 29;
inline constexpr int kFVersion1 = 32;
inline constexpr int kFAccessPlatform = 33;
inline constexpr int kFRingPacked = 34;

constexpr uint64_t Bit(int n) { return 1ULL << n; }

// Device IDs (spec 5).
enum class DeviceType : uint32_t {
  kNet = 1,
  kBlock = 2,
  kConsole = 3,
  kRng = 4,
  kBalloon = 5,
  kGpu = 16,
  kVsock = 19,
};

// Split virtqueue layout (spec 2.7).
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;
inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint16_t kUsedFNoNotify = 1;

struct VirtqDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VirtqDesc) == 16);

struct VirtqUsedElem {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(VirtqUsedElem) == 8);

// Packed virtqueue layout (spec 2.8): descriptors carry their own
// available/used marks; the driver and device areas hold event suppression.
inline constexpr uint16_t kPackedDescFAvail = 1 << 7;
inline constexpr uint16_t kPackedDescFUsed = 1 << 15;
inline constexpr uint16_t kRingEventEnable = 0;
inline constexpr uint16_t kRingEventDisable = 1;
inline constexpr uint16_t kRingEventDesc = 2;

struct PackedDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};
static_assert(sizeof(PackedDesc) == 16);

// The largest queue any kindling device offers.
inline constexpr uint16_t kMaxQueueSize = 256;

}  // namespace virtio

#endif  // VIRTIO_TYPES_H_
