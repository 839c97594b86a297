// MmioTransport: a virtio device behind the virtio-mmio register block,
// version 2 (virtio 1.2, 4.2.2), as a vcpu::BusDevice.
//
//   auto t = std::make_shared<MmioTransport>(device, mem, loop, [&] {
//     irqfd.Write();   // or pulse the GSI
//   });
//   RETURN_IF_ERROR(mmio_bus.Insert(t, 0xd0000000, kMmioSize));
//   // optional: KVM ioeventfd on base + kQueueNotify, watched by the loop
//   loop.WatchEventFd(efd, [t] { t->Notify(...); })   (see NotifyAddress)
//
// The guest finds it through `virtio_mmio.device=4K@0xd0000000:5` on the
// kernel command line or an LNRO0005 device in the DSDT.
#ifndef VIRTIO_MMIO_H_
#define VIRTIO_MMIO_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "vcpu/bus.h"
#include "virtio/transport.h"

namespace virtio {

inline constexpr uint64_t kMmioSize = 0x1000;
inline constexpr uint64_t kMmioQueueNotify = 0x50;
inline constexpr uint32_t kMmioMagic = 0x74726976;  // "virt"
inline constexpr uint32_t kMmioVendor = 0x4c444e4b;  // "KNDL"

// The transport's state plus the virtio-mmio registers that hold state.
struct MmioState {
  TransportState transport;
  uint32_t interrupt_status = 0;  // InterruptStatus bits 0-1
  uint32_t queue_sel = 0;
  uint32_t device_features_sel = 0;
  uint32_t driver_features_sel = 0;
};

class MmioTransport : public Transport, public vcpu::BusDevice, private Interrupt {
 public:
  // `raise_irq` asserts the device's interrupt line (edge) from any thread.
  MmioTransport(std::shared_ptr<VirtioDevice> device, vm_memory::GuestMemory& memory,
                EventLoop& loop, std::function<void()> raise_irq);

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;
  uint32_t interrupt_status() const { return isr_.load(); }
  // Snapshots (Transport::SaveState / RestoreState's rules and threads).
  MmioState SaveMmioState() const;
  absl::Status RestoreMmioState(const MmioState& state);

 private:
  Interrupt& interrupt() override { return *this; }
  void OnReset() override { isr_.store(0); }
  void SignalQueue(uint16_t queue) override;
  void SignalConfig() override;
  uint32_t ReadRegister(uint64_t offset);
  void WriteRegister(uint64_t offset, uint32_t value);
  void WriteQueueRegister(uint64_t offset, uint32_t value);

  std::function<void()> raise_irq_;
  std::atomic<uint32_t> isr_{0};
  std::atomic<uint32_t> queue_sel_{0};
  std::atomic<uint32_t> device_features_sel_{0};
  std::atomic<uint32_t> driver_features_sel_{0};
};

}  // namespace virtio

#endif  // VIRTIO_MMIO_H_
