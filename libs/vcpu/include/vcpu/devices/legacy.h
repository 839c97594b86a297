// Small legacy PC devices as state machines with injected effects:
//
//   I8042     ports 0x60/0x64: enough of the keyboard controller for a
//             guest to reset the machine (command 0xfe).
//   DebugExit port 0xf4: the guest writes one byte; the VMM exits with it.
//   CmosRtc   ports 0x70/0x71: wall-clock time (BCD, 24h) and the memory
//             size registers firmware and old kernels read.
//   AcpiSleep two ports: a hardware-reduced ACPI platform's sleep control
//             register (the FADT's SLEEP_CONTROL_REG; writing SLP_TYP=5
//             with SLP_EN is the guest powering off) and sleep status.
//
//   auto i8042 = std::make_shared<I8042>([&] { vm_runner.RequestReset(); });
//   auto exit  = std::make_shared<DebugExit>([&](uint8_t v) { Stop(v); });
//   auto rtc   = std::make_shared<CmosRtc>(mem_bytes, [] { return time(nullptr); });
//   auto s5    = std::make_shared<AcpiSleep>([&] { Stop(0); });
#ifndef VCPU_DEVICES_LEGACY_H_
#define VCPU_DEVICES_LEGACY_H_

#include <array>
#include <cstdint>
#include <ctime>
#include <functional>
#include <span>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "vcpu/bus.h"

namespace vcpu {

class I8042 : public BusDevice {
 public:
  explicit I8042(std::function<void()> reset) : reset_(std::move(reset)) {}
  // offset 0 = port 0x60 (data), offset 4 = port 0x64 (status/command)
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  std::function<void()> reset_;
  absl::Mutex mu_;
  uint8_t command_byte_ ABSL_GUARDED_BY(mu_) = 0;
  int pending_command_ ABSL_GUARDED_BY(mu_) = -1;
  int output_ ABSL_GUARDED_BY(mu_) = -1;  // byte waiting at port 0x60
};

class DebugExit : public BusDevice {
 public:
  explicit DebugExit(std::function<void(uint8_t)> on_exit)
      : on_exit_(std::move(on_exit)) {}
  void Read(uint64_t, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  std::function<void(uint8_t)> on_exit_;
};

class CmosRtc : public BusDevice {
 public:
  CmosRtc(uint64_t ram_bytes, std::function<time_t()> clock);
  // offset 0 = port 0x70 (index), 1 = port 0x71 (data)
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  uint8_t ReadRegister(uint8_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::function<time_t()> clock_;
  absl::Mutex mu_;
  uint8_t index_ ABSL_GUARDED_BY(mu_) = 0;
  std::array<uint8_t, 128> nvram_ ABSL_GUARDED_BY(mu_) = {};
};

class AcpiSleep : public BusDevice {
 public:
  // The SLP_TYP value the DSDT's \_S5 package gives (see platform_tables.h).
  static constexpr uint8_t kSoftOffType = 5;
  explicit AcpiSleep(std::function<void()> power_off)
      : power_off_(std::move(power_off)) {}
  // offset 0 = sleep control (write-only), 1 = sleep status (reads 0:
  // the platform never wakes; writes, which clear WAK_STS, are ignored).
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  std::function<void()> power_off_;
};

}  // namespace vcpu

#endif  // VCPU_DEVICES_LEGACY_H_
