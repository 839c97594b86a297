#include "vcpu/devices/serial.h"

#include <algorithm>

namespace vcpu {
namespace {

// Register offsets.
constexpr uint64_t kData = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4,
                   kLsr = 5, kMsr = 6, kScr = 7;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kIerRda = 0x01, kIerThre = 0x02;
constexpr uint8_t kIirNone = 0x01, kIirThre = 0x02, kIirRda = 0x04;
constexpr uint8_t kIirFifoBits = 0xc0;
constexpr uint8_t kLsrDataReady = 0x01, kLsrThre = 0x20, kLsrTemt = 0x40;

}  // namespace

void Serial::Read(uint64_t offset, std::span<uint8_t> data) {
  if (data.empty()) return;
  bool fire;
  {
    absl::MutexLock lock(&mu_);
    data[0] = ReadRegister(offset);
    fire = UpdateInterrupt();
  }
  for (size_t i = 1; i < data.size(); ++i) data[i] = 0;
  if (fire && interrupt_) interrupt_();
}

void Serial::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty()) return;
  bool fire;
  int out = -1;
  {
    absl::MutexLock lock(&mu_);
    if (offset == kData && !(lcr_ & kLcrDlab)) {
      if (mcr_ & kMcrLoop) {
        if (input_.size() < kInputCapacity) input_.push_back(data[0]);
      } else {
        out = data[0];
      }
      thr_empty_pending_ = true;  // the byte left at once
    } else {
      WriteRegister(offset, data[0]);
    }
    fire = UpdateInterrupt();
  }
  if (out >= 0 && output_) output_(static_cast<uint8_t>(out));
  if (fire && interrupt_) interrupt_();
}

size_t Serial::EnqueueInput(std::string_view bytes) {
  bool fire;
  size_t n = 0;
  {
    absl::MutexLock lock(&mu_);
    while (n < bytes.size() && input_.size() < kInputCapacity) {
      input_.push_back(static_cast<uint8_t>(bytes[n++]));
    }
    fire = UpdateInterrupt();
  }
  if (fire && interrupt_) interrupt_();
  return n;
}

size_t Serial::InputQueued() const {
  absl::MutexLock lock(&mu_);
  return input_.size();
}

Serial::State Serial::SaveState() const {
  absl::MutexLock lock(&mu_);
  return State{ier_, lcr_, mcr_, scr_, dll_, dlh_, msr_, thr_empty_pending_,
               std::string(input_.begin(), input_.end())};
}

void Serial::RestoreState(const State& state) {
  absl::MutexLock lock(&mu_);
  ier_ = state.ier & 0x0f;
  lcr_ = state.lcr;
  mcr_ = state.mcr & 0x1f;
  scr_ = state.scr;
  dll_ = state.dll;
  dlh_ = state.dlh;
  msr_ = state.msr;
  thr_empty_pending_ = state.thr_empty_pending;
  size_t n = std::min(state.input.size(), kInputCapacity);
  input_.assign(state.input.begin(), state.input.begin() + n);
  // The edge for a pending interrupt was sent before the save (it is in
  // the saved LAPIC); the line is only marked high, not pulsed again.
  line_high_ = (Iir() & kIirNone) == 0;
}

uint8_t Serial::Iir() const {
  if ((ier_ & kIerRda) && !input_.empty()) return kIirRda | kIirFifoBits;
  if ((ier_ & kIerThre) && thr_empty_pending_) return kIirThre | kIirFifoBits;
  return kIirNone | kIirFifoBits;
}

bool Serial::UpdateInterrupt() {
  bool high = (Iir() & kIirNone) == 0;
  bool rising = high && !line_high_;
  line_high_ = high;
  return rising;
}

uint8_t Serial::ReadRegister(uint64_t offset) {
  bool dlab = lcr_ & kLcrDlab;
  switch (offset) {
    case kData:
      if (dlab) return dll_;
      if (input_.empty()) return 0;
      {
        uint8_t b = input_.front();
        input_.pop_front();
        return b;
      }
    case kIer:
      return dlab ? dlh_ : ier_;
    case kIir: {
      uint8_t iir = Iir();
      // Reading IIR while it reports THRE clears that interrupt.
      if ((iir & 0x0f) == kIirThre) thr_empty_pending_ = false;
      return iir;
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr:
      return kLsrThre | kLsrTemt | (input_.empty() ? 0 : kLsrDataReady);
    case kMsr:
      if (mcr_ & kMcrLoop) {
        // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
        return ((mcr_ & 0x01) << 5) | ((mcr_ & 0x02) << 3) |
               ((mcr_ & 0x04) << 4) | ((mcr_ & 0x08) << 4);
      }
      return msr_;
    case kScr:
      return scr_;
    default:
      return 0xff;
  }
}

void Serial::WriteRegister(uint64_t offset, uint8_t v) {
  bool dlab = lcr_ & kLcrDlab;
  switch (offset) {
    case kData:
      dll_ = v;  // only reached with DLAB set
      break;
    case kIer:
      if (dlab) {
        dlh_ = v;
      } else {
        // Enabling THRE interrupts with an empty THR raises one at once.
        if ((v & kIerThre) && !(ier_ & kIerThre)) thr_empty_pending_ = true;
        ier_ = v & 0x0f;
      }
      break;
    case kIir:
      break;  // FCR: FIFOs are always on and always empty for output
    case kLcr:
      lcr_ = v;
      break;
    case kMcr:
      mcr_ = v & 0x1f;
      break;
    case kScr:
      scr_ = v;
      break;
    default:
      break;  // LSR and MSR are read-only
  }
}

}  // namespace vcpu
