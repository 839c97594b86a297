#include "virtio/transport.h"

#include <cstring>

#include <cstdio>

#include "absl/strings/str_format.h"
#include "absl/strings/str_cat.h"

namespace virtio {

Transport::Transport(std::shared_ptr<VirtioDevice> device, vm_memory::GuestMemory& memory,
                     EventLoop& loop)
    : device_(std::move(device)),
      memory_(memory),
      loop_(loop),
      offered_(device_->features() | Bit(kFVersion1) | Bit(kFIndirectDesc) | Bit(kFEventIdx)) {
  for (uint16_t i = 0; i < device_->num_queues(); ++i) {
    queues_.emplace_back(device_->max_queue_size());
  }
}

void Transport::OfferPackedRings() {
  if (device_->supports_packed_rings()) offered_.fetch_or(Bit(kFRingPacked));
}

uint32_t Transport::DeviceFeatures(uint32_t select) const {
  if (select > 1) return 0;
  return static_cast<uint32_t>(offered_.load() >> (32 * select));
}

void Transport::SetDriverFeatures(uint32_t select, uint32_t value) {
  if (select > 1 || (status_.load() & kStatusFeaturesOk)) return;
  absl::MutexLock l(&mu_);
  uint64_t mask = 0xffffffffULL << (32 * select);
  driver_features_ = (driver_features_ & ~mask) | (uint64_t{value} << (32 * select));
}

uint64_t Transport::driver_features() const {
  absl::MutexLock l(&mu_);
  return driver_features_;
}

Queue* Transport::queue(uint32_t index) {
  return index < queues_.size() ? &queues_[index] : nullptr;
}

void Transport::WriteStatus(uint32_t value) {
  if (value == 0) {
    loop_.RunSync([this] { ResetOnLoop(); });
    return;
  }
  uint32_t old = status_.load();
  uint32_t added = value & ~old;
  if (added & kStatusFeaturesOk) {
    uint64_t f = driver_features();
    const uint64_t offered = offered_.load();
    if ((f & ~offered) != 0 || !(f & Bit(kFVersion1))) {
      absl::FPrintF(stderr,
                    "kindling: %s: driver features %#x are not a subset of the offered %#x "
                    "with VERSION_1; FEATURES_OK refused\n",
                    device_->name(), f, offered);
      value &= ~kStatusFeaturesOk;
    }
  }
  if ((value & kStatusDriverOk) && !(value & kStatusFeaturesOk)) {
    value &= ~kStatusDriverOk;  // spec 3.1.1: features first
  }
  // Keep a needs-reset the device raised meanwhile.
  status_.store(value | (old & kStatusNeedsReset));
  if ((added & kStatusDriverOk) && (value & kStatusDriverOk)) {
    loop_.RunSync([this] { Activate(); });
  }
}

void Transport::Activate() {
  uint64_t features = driver_features();
  for (size_t i = 0; i < queues_.size(); ++i) {
    Queue& q = queues_[i];
    if (!q.ready()) continue;
    absl::Status s = q.Activate(memory_, features);
    if (!s.ok()) {
      Fail(absl::Status(s.code(), absl::StrCat("queue ", i, ": ", s.message())));
      return;
    }
  }
  absl::Status s = device_->Activate(MakeContext(features));
  if (!s.ok()) {
    Fail(s);
    return;
  }
  active_ = true;
  ProcessPending();  // notifications that raced with activation
}

ActivateContext Transport::MakeContext(uint64_t features) {
  return {&memory_, queues_, &interrupt(), features,
          [this](uint16_t q) { Notify(q); }, [this] { ConfigChanged(); },
          [this](std::function<absl::Status()> fn) { PostToDevice(std::move(fn)); }};
}

void Transport::ResetOnLoop() {
  if (active_) device_->Reset();
  active_ = false;
  for (Queue& q : queues_) q.Reset();
  pending_.store(0);
  {
    absl::MutexLock l(&mu_);
    driver_features_ = 0;
    failure_.clear();
  }
  status_.store(0);
  OnReset();
}

void Transport::Notify(uint16_t queue) {
  if (queue >= queues_.size() || queue >= 64) return;
  // Coalesce: a storm of notifications posts one task per queue.
  uint64_t bit = 1ULL << queue;
  if (pending_.fetch_or(bit) & bit) return;
  loop_.Post([this] { ProcessPending(); });
}

void Transport::ProcessPending() {
  if (!active_ || (status_.load() & kStatusNeedsReset)) return;
  uint64_t pending = pending_.exchange(0);
  for (uint16_t q = 0; pending != 0; ++q, pending >>= 1) {
    if (!(pending & 1) || !queues_[q].active()) continue;
    absl::Status s = device_->ProcessQueue(q);
    if (!s.ok()) {
      Fail(absl::Status(s.code(), absl::StrCat("queue ", q, ": ", s.message())));
      return;
    }
  }
}

void Transport::PostToDevice(std::function<absl::Status()> fn) {
  loop_.Post([this, fn = std::move(fn)] {
    absl::Status s = fn();
    if (!s.ok()) Fail(s);
  });
}

void Transport::ConfigChanged() {
  config_generation_.fetch_add(1);
  if (status_.load() & kStatusDriverOk) interrupt().SignalConfig();
}

void Transport::Fail(const absl::Status& why) {
  {
    absl::MutexLock l(&mu_);
    if (!failure_.empty()) return;
    failure_ = std::string(why.message());
  }
  absl::FPrintF(stderr, "kindling: %s: device needs reset: %s\n", device_->name(),
                why.message());
  status_.fetch_or(kStatusNeedsReset);
  config_generation_.fetch_add(1);
  if (status_.load() & kStatusDriverOk) interrupt().SignalConfig();
  if (on_failure_) on_failure_(device_->name(), std::string(why.message()));
}

std::string Transport::failure() const {
  absl::MutexLock l(&mu_);
  return failure_;
}

}  // namespace virtio
