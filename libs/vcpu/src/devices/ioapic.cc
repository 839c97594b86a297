#include "vcpu/devices/ioapic.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace vcpu {
namespace {

constexpr uint64_t kRegSelect = 0x00;
constexpr uint64_t kRegWindow = 0x10;
constexpr uint32_t kVersion = 0x00170011;  // 24 entries, version 0x11
constexpr uint64_t kMasked = 1ULL << 16;
constexpr uint64_t kLevelTriggered = 1ULL << 15;
constexpr uint64_t kRemoteIrr = 1ULL << 14;
constexpr uint64_t kDeliveryStatus = 1ULL << 12;  // never set: delivery is immediate
// Bits the guest may write: vector, delivery mode, destination mode,
// polarity, trigger mode, mask, destination.
constexpr uint64_t kWritableMask = 0xff000000'0001afffULL;

}  // namespace

Ioapic::Ioapic(uint8_t id, MsiSink msi) : msi_(std::move(msi)), id_(id) {
  redirection_.fill(kMasked);
}

uint64_t Ioapic::redirection(uint32_t pin) const {
  absl::ReaderMutexLock lock(&mu_);
  return pin < kPins ? redirection_[pin] : 0;
}

Ioapic::State Ioapic::SaveState() const {
  absl::ReaderMutexLock lock(&mu_);
  return State{id_, select_, redirection_, level_};
}

void Ioapic::RestoreState(const State& state) {
  absl::MutexLock lock(&mu_);
  id_ = state.id;
  select_ = state.select & 0xff;
  for (int i = 0; i < kPins; ++i) {
    redirection_[i] = state.redirection[i] & (kWritableMask | kRemoteIrr);
  }
  level_ = state.level;
}

uint32_t Ioapic::ReadRegister(uint32_t index) const {
  switch (index) {
    case 0x00: return uint32_t{id_} << 24;
    case 0x01: return kVersion;
    case 0x02: return uint32_t{id_} << 24;  // arbitration ID
    default: break;
  }
  if (index >= 0x10 && index < 0x10 + 2 * kPins) {
    uint64_t e = redirection_[(index - 0x10) / 2];
    return (index & 1) ? static_cast<uint32_t>(e >> 32) : static_cast<uint32_t>(e);
  }
  return 0;
}

void Ioapic::WriteRegister(uint32_t index, uint32_t value) {
  if (index == 0x00) {
    id_ = (value >> 24) & 0x0f;
    return;
  }
  if (index < 0x10 || index >= 0x10 + 2 * kPins) return;
  uint64_t& e = redirection_[(index - 0x10) / 2];
  uint64_t keep = e & ~kWritableMask;  // remote IRR, delivery status
  uint64_t v = (index & 1) ? (uint64_t{value} << 32) | (e & 0xffffffffULL)
                           : (e & 0xffffffff00000000ULL) | value;
  e = (v & kWritableMask) | keep;
}

bool Ioapic::Service(uint32_t pin, uint64_t* address, uint32_t* data) {
  uint64_t& e = redirection_[pin];
  if (e & kMasked) return false;
  bool level = e & kLevelTriggered;
  if (level && (e & kRemoteIrr)) return false;  // waiting for the EOI
  if (level) e |= kRemoteIrr;
  uint32_t dest = static_cast<uint32_t>(e >> 56);
  bool logical = e & (1ULL << 11);
  *address = 0xfee00000ULL | (uint64_t{dest} << 12) | (logical ? 1u << 2 : 0);
  *data = static_cast<uint32_t>(e & 0xff) |            // vector
          static_cast<uint32_t>(e & 0x700) |           // delivery mode
          (level ? (1u << 15) | (1u << 14) : 0);      // trigger, assert
  return true;
}

void Ioapic::SetIrq(uint32_t pin, bool level) {
  if (pin >= kPins) return;
  uint64_t address = 0;
  uint32_t data = 0;
  bool fire = false;
  {
    absl::MutexLock lock(&mu_);
    bool was = level_[pin];
    level_[pin] = level;
    bool level_triggered = redirection_[pin] & kLevelTriggered;
    if (level && (level_triggered || !was)) fire = Service(pin, &address, &data);
  }
  if (fire && msi_) msi_(address, data);
}

void Ioapic::EndOfInterrupt(uint8_t vector) {
  std::vector<std::pair<uint64_t, uint32_t>> to_send;
  {
    absl::MutexLock lock(&mu_);
    for (uint32_t pin = 0; pin < kPins; ++pin) {
      uint64_t& e = redirection_[pin];
      if ((e & 0xff) != vector || !(e & kRemoteIrr)) continue;
      e &= ~kRemoteIrr;
      uint64_t a;
      uint32_t d;
      // A level line still asserted interrupts again.
      if (level_[pin] && Service(pin, &a, &d)) to_send.emplace_back(a, d);
    }
  }
  for (auto& [a, d] : to_send) {
    if (msi_) msi_(a, d);
  }
}

void Ioapic::Read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  absl::ReaderMutexLock lock(&mu_);
  uint32_t v = 0;
  if (offset == kRegSelect) v = select_;
  if (offset == kRegWindow) v = ReadRegister(select_);
  std::memcpy(data.data(), &v, std::min<size_t>(data.size(), 4));
}

void Ioapic::Write(uint64_t offset, std::span<const uint8_t> data) {
  uint32_t v = 0;
  std::memcpy(&v, data.data(), std::min<size_t>(data.size(), 4));
  std::vector<uint32_t> pending;
  uint64_t address = 0;
  uint32_t msi_data = 0;
  bool fire = false;
  {
    absl::MutexLock lock(&mu_);
    if (offset == kRegSelect) {
      select_ = v & 0xff;
    } else if (offset == kRegWindow) {
      bool was_masked = (select_ >= 0x10 && select_ < 0x10 + 2 * kPins)
                            ? redirection_[(select_ - 0x10) / 2] & kMasked
                            : true;
      WriteRegister(select_, v);
      // Unmasking a level-triggered pin whose line is up delivers it.
      if (select_ >= 0x10 && select_ < 0x10 + 2 * kPins) {
        uint32_t pin = (select_ - 0x10) / 2;
        uint64_t e = redirection_[pin];
        if (was_masked && !(e & kMasked) && (e & kLevelTriggered) && level_[pin]) {
          fire = Service(pin, &address, &msi_data);
        }
      }
    }
  }
  if (fire && msi_) msi_(address, msi_data);
}

}  // namespace vcpu
