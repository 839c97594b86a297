// A userspace I/O APIC for KVM's split irqchip (LAPIC in the kernel, IOAPIC
// in the VMM): 24 pins, the register window at 0xfec00000, and delivery of
// an asserted, unmasked pin as an MSI through an injected sink.
//
//   auto ioapic = std::make_shared<Ioapic>(
//       [&](uint64_t addr, uint32_t data) { vm.SignalMsi(addr, data); });
//   mmio_bus.Insert(ioapic, 0xfec00000, 0x20);
//   ioapic->SetIrq(4, true);  // the UART's line went up
//
// Edge-triggered pins fire on a rising edge. A level-triggered pin fires
// when asserted and unmasked and is not re-sent until the guest's EOI
// (EndOfInterrupt, from KVM_EXIT_IOAPIC_EOI) clears its remote IRR.
#ifndef VCPU_DEVICES_IOAPIC_H_
#define VCPU_DEVICES_IOAPIC_H_

#include <array>
#include <cstdint>
#include <functional>
#include <span>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "vcpu/bus.h"

namespace vcpu {

class Ioapic : public BusDevice {
 public:
  static constexpr int kPins = 24;
  using MsiSink = std::function<void(uint64_t address, uint32_t data)>;

  Ioapic(uint8_t id, MsiSink msi);

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Sets the level of input `pin`; out-of-range pins are ignored.
  void SetIrq(uint32_t pin, bool level);
  // The guest's LAPIC signalled EOI for `vector`.
  void EndOfInterrupt(uint8_t vector);

  uint64_t redirection(uint32_t pin) const;  // for tests and snapshots

  // Everything the guest can observe, for snapshots and migration.
  struct State {
    uint8_t id = 0;
    uint32_t select = 0;
    std::array<uint64_t, kPins> redirection = {};
    std::array<bool, kPins> level = {};
  };
  State SaveState() const;
  // Loads a saved state; bits the guest could not have written (delivery
  // status) are dropped. Sends nothing: a pin asserted at save time with
  // its remote IRR clear fires again on its next edge or EOI.
  void RestoreState(const State& state);

 private:
  uint32_t ReadRegister(uint32_t index) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void WriteRegister(uint32_t index, uint32_t value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // If `pin` should interrupt now, marks it and returns the MSI to send.
  bool Service(uint32_t pin, uint64_t* address, uint32_t* data)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  MsiSink msi_;
  mutable absl::Mutex mu_;
  uint8_t id_ ABSL_GUARDED_BY(mu_);
  uint32_t select_ ABSL_GUARDED_BY(mu_) = 0;
  std::array<uint64_t, kPins> redirection_ ABSL_GUARDED_BY(mu_);
  std::array<bool, kPins> level_ ABSL_GUARDED_BY(mu_) = {};
};

}  // namespace vcpu

#endif  // VCPU_DEVICES_IOAPIC_H_
