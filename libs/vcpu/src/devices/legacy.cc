#include "vcpu/devices/legacy.h"

#include <algorithm>
#include <cstring>

namespace vcpu {
namespace {

constexpr uint64_t kI8042Data = 0, kI8042Command = 4;
constexpr uint8_t kCmdReadCommandByte = 0x20;
constexpr uint8_t kCmdWriteCommandByte = 0x60;
constexpr uint8_t kCmdSelfTest = 0xaa;
constexpr uint8_t kCmdWriteOutputPort = 0xd1;
constexpr uint8_t kCmdPulseReset = 0xfe;
constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystemFlag = 0x04;

uint8_t Bcd(int v) { return static_cast<uint8_t>(((v / 10) << 4) | (v % 10)); }

}  // namespace

void I8042::Read(uint64_t offset, std::span<uint8_t> data) {
  if (data.empty()) return;
  absl::MutexLock lock(&mu_);
  std::fill(data.begin(), data.end(), 0);
  if (offset == kI8042Command) {
    data[0] = kStatusSystemFlag | (output_ >= 0 ? kStatusOutputFull : 0);
  } else if (offset == kI8042Data) {
    data[0] = output_ >= 0 ? static_cast<uint8_t>(output_) : 0;
    output_ = -1;
  }
}

void I8042::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty()) return;
  bool reset = false;
  {
    absl::MutexLock lock(&mu_);
    uint8_t v = data[0];
    if (offset == kI8042Command) {
      switch (v) {
        case kCmdReadCommandByte:
          output_ = command_byte_;
          break;
        case kCmdWriteCommandByte:
        case kCmdWriteOutputPort:
          pending_command_ = v;
          break;
        case kCmdSelfTest:
          output_ = 0x55;
          break;
        case kCmdPulseReset:
          reset = true;
          break;
        default:
          break;
      }
    } else if (offset == kI8042Data) {
      if (pending_command_ == kCmdWriteCommandByte) command_byte_ = v;
      // Output port bit 0 low = system reset.
      if (pending_command_ == kCmdWriteOutputPort && !(v & 1)) reset = true;
      pending_command_ = -1;
    }
  }
  if (reset && reset_) reset_();
}

void DebugExit::Read(uint64_t, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
}

void DebugExit::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset == 0 && !data.empty() && on_exit_) on_exit_(data[0]);
}

void AcpiSleep::Read(uint64_t, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
}

// ACPI 6.4, 4.8.3.7: SLP_TYPx in bits 2-4, SLP_EN in bit 5. Other sleep
// states (S1-S4) are not offered by the DSDT; a guest asking for one
// anyway is ignored, as hardware without that state would.
void AcpiSleep::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset != 0 || data.empty()) return;
  bool enable = data[0] & 0x20;
  uint8_t type = (data[0] >> 2) & 0x7;
  if (enable && type == kSoftOffType && power_off_) power_off_();
}

CmosRtc::CmosRtc(uint64_t ram_bytes, std::function<time_t()> clock)
    : clock_(std::move(clock)) {
  // 0x34/0x35: RAM between 16 MiB and 4 GiB in 64 KiB units;
  // 0x5b-0x5d: RAM above 4 GiB in 64 KiB units (as QEMU/SeaBIOS use them).
  constexpr uint64_t k16M = 16ULL << 20, k3G = 3ULL << 30;
  uint64_t low = std::min(ram_bytes, k3G);
  uint64_t mid = low > k16M ? (low - k16M) >> 16 : 0;
  mid = std::min<uint64_t>(mid, 0xffff);
  uint64_t high = ram_bytes > k3G ? (ram_bytes - k3G) >> 16 : 0;
  nvram_[0x34] = mid & 0xff;
  nvram_[0x35] = mid >> 8;
  nvram_[0x5b] = high & 0xff;
  nvram_[0x5c] = (high >> 8) & 0xff;
  nvram_[0x5d] = (high >> 16) & 0xff;
}

uint8_t CmosRtc::ReadRegister(uint8_t index) {
  time_t now = clock_ ? clock_() : 0;
  struct tm tm;
  gmtime_r(&now, &tm);
  switch (index) {
    case 0x00: return Bcd(tm.tm_sec);
    case 0x02: return Bcd(tm.tm_min);
    case 0x04: return Bcd(tm.tm_hour);
    case 0x06: return Bcd(tm.tm_wday + 1);
    case 0x07: return Bcd(tm.tm_mday);
    case 0x08: return Bcd(tm.tm_mon + 1);
    case 0x09: return Bcd(tm.tm_year % 100);
    case 0x32: return Bcd(19 + tm.tm_year / 100);  // century
    case 0x0a: return 0x26;  // divider/rate; update-in-progress never set
    case 0x0b: return 0x02;  // 24-hour, BCD, no interrupts
    case 0x0c: return 0x00;
    case 0x0d: return 0x80;  // valid RAM and time
    default: return nvram_[index & 0x7f];
  }
}

void CmosRtc::Read(uint64_t offset, std::span<uint8_t> data) {
  if (data.empty()) return;
  absl::MutexLock lock(&mu_);
  std::fill(data.begin(), data.end(), 0);
  data[0] = offset == 1 ? ReadRegister(index_) : 0xff;
}

void CmosRtc::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty()) return;
  absl::MutexLock lock(&mu_);
  if (offset == 0) {
    index_ = data[0] & 0x7f;  // bit 7 is the NMI mask
  } else if (offset == 1 && index_ >= 0x0e) {
    nvram_[index_] = data[0];  // clock registers are read-only here
  }
}

}  // namespace vcpu
