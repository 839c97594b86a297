// A 16550A-compatible UART (the PC's COM1 at 0x3f8, IRQ 4) as a pure state
// machine: bytes the guest sends go to an output sink, bytes for the guest
// are queued with EnqueueInput, and interrupts go to an injected trigger.
// No KVM, no threads, no fds: testable and fuzzable alone.
//
//   auto uart = std::make_shared<Serial>(
//       [](uint8_t b) { std::fputc(b, stdout); },  // output
//       [&] { vm.PulseIrq(4); });                  // interrupt
//   bus.Insert(uart, 0x3f8, 8);
//   uart->EnqueueInput("root\n");
#ifndef VCPU_DEVICES_SERIAL_H_
#define VCPU_DEVICES_SERIAL_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "vcpu/bus.h"

namespace vcpu {

class Serial : public BusDevice {
 public:
  using OutputSink = std::function<void(uint8_t)>;
  using InterruptTrigger = std::function<void()>;
  static constexpr size_t kInputCapacity = 4096;

  Serial(OutputSink output, InterruptTrigger interrupt)
      : output_(std::move(output)), interrupt_(std::move(interrupt)) {}

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Queues bytes for the guest; returns how many fit (the rest are for the
  // caller to retry once the guest has read some).
  size_t EnqueueInput(std::string_view bytes);
  size_t InputQueued() const;

  // The registers and the queued input, for snapshots and migration.
  struct State {
    uint8_t ier = 0, lcr = 0x03, mcr = 0x08, scr = 0, dll = 0x0c, dlh = 0;
    uint8_t msr = 0xb0;
    bool thr_empty_pending = false;
    std::string input;  // at most kInputCapacity bytes are restored
  };
  State SaveState() const;
  void RestoreState(const State& state);

 private:
  uint8_t ReadRegister(uint64_t offset) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteRegister(uint64_t offset, uint8_t v)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Recomputes the pending interrupt; returns true if the line should fire.
  bool UpdateInterrupt() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint8_t Iir() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  OutputSink output_;
  InterruptTrigger interrupt_;
  mutable absl::Mutex mu_;
  std::deque<uint8_t> input_ ABSL_GUARDED_BY(mu_);
  uint8_t ier_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t lcr_ ABSL_GUARDED_BY(mu_) = 0x03;  // 8N1
  uint8_t mcr_ ABSL_GUARDED_BY(mu_) = 0x08;  // OUT2
  uint8_t scr_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t dll_ ABSL_GUARDED_BY(mu_) = 0x0c;  // 9600 baud
  uint8_t dlh_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t msr_ ABSL_GUARDED_BY(mu_) = 0xb0;  // DCD, DSR, CTS
  bool thr_empty_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool line_high_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vcpu

#endif  // VCPU_DEVICES_SERIAL_H_
