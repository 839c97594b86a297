#include "virtio/mmio.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"

namespace virtio {
namespace {

// Register offsets (virtio 1.2, table 4.1).
enum : uint64_t {
  kMagic = 0x000,
  kVersion = 0x004,
  kDeviceId = 0x008,
  kVendorId = 0x00c,
  kDeviceFeatures = 0x010,
  kDeviceFeaturesSel = 0x014,
  kDriverFeatures = 0x020,
  kDriverFeaturesSel = 0x024,
  kQueueSel = 0x030,
  kQueueNumMax = 0x034,
  kQueueNum = 0x038,
  kQueueReady = 0x044,
  kQueueNotify = 0x050,
  kInterruptStatus = 0x060,
  kInterruptAck = 0x064,
  kStatus = 0x070,
  kQueueDescLow = 0x080,
  kQueueDescHigh = 0x084,
  kQueueDriverLow = 0x090,
  kQueueDriverHigh = 0x094,
  kQueueDeviceLow = 0x0a0,
  kQueueDeviceHigh = 0x0a4,
  kShmSel = 0x0ac,
  kShmLenLow = 0x0b0,
  kShmLenHigh = 0x0b4,
  kShmBaseLow = 0x0b8,
  kShmBaseHigh = 0x0bc,
  kConfigGeneration = 0x0fc,
  kConfig = 0x100,
};

constexpr uint32_t kIsrUsedBuffer = 1;
constexpr uint32_t kIsrConfigChange = 2;

uint64_t SetHalf(uint64_t v, bool high, uint32_t half) {
  return high ? (v & 0xffffffffULL) | (uint64_t{half} << 32)
              : (v & ~0xffffffffULL) | half;
}

}  // namespace

MmioTransport::MmioTransport(std::shared_ptr<VirtioDevice> device,
                             vm_memory::GuestMemory& memory, EventLoop& loop,
                             std::function<void()> raise_irq)
    : Transport(std::move(device), memory, loop), raise_irq_(std::move(raise_irq)) {}

void MmioTransport::SignalQueue(uint16_t) {
  isr_.fetch_or(kIsrUsedBuffer);
  raise_irq_();
}

void MmioTransport::SignalConfig() {
  isr_.fetch_or(kIsrConfigChange);
  raise_irq_();
}

void MmioTransport::Read(uint64_t offset, std::span<uint8_t> data) {
  if (offset >= kConfig) {
    device().ReadConfig(offset - kConfig, data);
    return;
  }
  // Registers are 32 bits wide and read whole (spec 4.2.2.2).
  if (data.size() != 4 || offset % 4 != 0) {
    std::memset(data.data(), 0, data.size());
    return;
  }
  uint32_t v = ReadRegister(offset);
  std::memcpy(data.data(), &v, 4);
}

void MmioTransport::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset >= kConfig) {
    device().WriteConfig(offset - kConfig, data);
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) return;
  uint32_t v;
  std::memcpy(&v, data.data(), 4);
  WriteRegister(offset, v);
}

uint32_t MmioTransport::ReadRegister(uint64_t offset) {
  Queue* q = queue(queue_sel_.load());
  switch (offset) {
    case kMagic:
      return kMmioMagic;
    case kVersion:
      return 2;
    case kDeviceId:
      return static_cast<uint32_t>(device().type());
    case kVendorId:
      return kMmioVendor;
    case kDeviceFeatures:
      return DeviceFeatures(device_features_sel_.load());
    case kQueueNumMax:
      return q ? q->max_size() : 0;
    case kQueueReady:
      return q && q->ready();
    case kInterruptStatus:
      return isr_.load();
    case kStatus:
      return status();
    case kShmLenLow:
    case kShmLenHigh:
      return 0xffffffff;  // no shared memory regions
    case kConfigGeneration:
      return config_generation();
    default:
      return 0;
  }
}

void MmioTransport::WriteRegister(uint64_t offset, uint32_t value) {
  switch (offset) {
    case kDeviceFeaturesSel:
      device_features_sel_.store(value);
      return;
    case kDriverFeatures:
      SetDriverFeatures(driver_features_sel_.load(), value);
      return;
    case kDriverFeaturesSel:
      driver_features_sel_.store(value);
      return;
    case kQueueSel:
      queue_sel_.store(value);
      return;
    case kQueueNotify:
      if (value <= 0xffff) Notify(static_cast<uint16_t>(value));
      return;
    case kInterruptAck:
      isr_.fetch_and(~value);
      return;
    case kStatus:
      WriteStatus(value);
      return;
    case kShmSel:
      return;
    default:
      WriteQueueRegister(offset, value);
  }
}

void MmioTransport::WriteQueueRegister(uint64_t offset, uint32_t value) {
  Queue* q = queue(queue_sel_.load());
  // Queue layout is fixed once the driver is running (spec 4.2.3.2).
  if (q == nullptr || driver_ok()) return;
  switch (offset) {
    case kQueueNum:
      q->set_size(static_cast<uint16_t>(value > 0xffff ? 0 : value));
      return;
    case kQueueReady:
      q->set_ready(value == 1);
      return;
    case kQueueDescLow:
    case kQueueDescHigh:
      q->set_desc_table(GuestAddress(SetHalf(q->desc_table().value, offset == kQueueDescHigh, value)));
      return;
    case kQueueDriverLow:
    case kQueueDriverHigh:
      q->set_avail_ring(GuestAddress(SetHalf(q->avail_ring().value, offset == kQueueDriverHigh, value)));
      return;
    case kQueueDeviceLow:
    case kQueueDeviceHigh:
      q->set_used_ring(GuestAddress(SetHalf(q->used_ring().value, offset == kQueueDeviceHigh, value)));
      return;
    default:
      return;  // unknown or read-only register: ignored
  }
}

MmioState MmioTransport::SaveMmioState() const {
  return {SaveState(), isr_.load(), queue_sel_.load(), device_features_sel_.load(),
          driver_features_sel_.load()};
}

absl::Status MmioTransport::RestoreMmioState(const MmioState& state) {
  if (state.interrupt_status > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("interrupt status ", state.interrupt_status, " has bits beyond 0-1"));
  }
  RETURN_IF_ERROR(RestoreState(state.transport));
  isr_.store(state.interrupt_status);
  queue_sel_.store(state.queue_sel);
  device_features_sel_.store(state.device_features_sel);
  driver_features_sel_.store(state.driver_features_sel);
  return absl::OkStatus();
}

}  // namespace virtio
