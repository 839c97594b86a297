// Transport::SaveState / RestoreState: the transport's part of a snapshot
// or migration. A restored state is untrusted: every status bit, feature
// and queue is checked before the device sees it.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"
#include "virtio/transport.h"

namespace virtio {
namespace {

constexpr uint32_t kKnownStatus = kStatusAcknowledge | kStatusDriver | kStatusDriverOk |
                                  kStatusFeaturesOk | kStatusNeedsReset | kStatusFailed;

}  // namespace

bool Transport::Quiesce() {
  if (!active_ || (status_.load() & kStatusNeedsReset)) return true;
  absl::StatusOr<bool> done = device_->Quiesce();
  if (done.ok()) return *done;
  Fail(done.status());
  return true;  // a broken device is at rest
}

TransportState Transport::SaveState() const {
  TransportState s;
  s.status = status_.load();
  s.driver_features = driver_features();
  s.config_generation = config_generation_.load();
  s.failure = failure();
  for (const Queue& q : queues_) s.queues.push_back(q.SaveState());
  return s;
}

absl::Status Transport::RestoreState(const TransportState& state) {
  if (state.status & ~kKnownStatus) {
    return absl::InvalidArgumentError(
        absl::StrFormat("status %#x has bits virtio does not define", state.status));
  }
  const uint64_t offered = offered_.load();
  if (state.driver_features & ~offered) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "driver features %#x are not a subset of the offered %#x", state.driver_features,
        offered));
  }
  const bool features_ok = state.status & kStatusFeaturesOk;
  const bool driver_ok = state.status & kStatusDriverOk;
  if ((driver_ok && !features_ok) ||
      (features_ok && !(state.driver_features & Bit(kFVersion1)))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "status %#x with features %#x is not a state the driver can reach", state.status,
        state.driver_features));
  }
  if (state.queues.size() != queues_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        state.queues.size(), " queues saved, the device has ", queues_.size()));
  }
  const bool broken = (state.status & kStatusNeedsReset) || !state.failure.empty();
  const bool activate = driver_ok && !broken;
  for (size_t i = 0; i < queues_.size(); ++i) {
    QueueState qs = state.queues[i];
    qs.active = qs.active && activate;
    absl::Status s = queues_[i].RestoreState(qs, memory_, state.driver_features);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("queue ", i, ": ", s.message()));
  }
  {
    absl::MutexLock l(&mu_);
    driver_features_ = state.driver_features;
    failure_ = broken && state.failure.empty() ? "needs reset (restored)" : state.failure;
  }
  config_generation_.store(state.config_generation);
  status_.store(state.status | (broken ? kStatusNeedsReset : 0));
  if (!activate) return absl::OkStatus();
  RETURN_IF_ERROR(device_->Activate(MakeContext(state.driver_features)));
  active_ = true;
  return absl::OkStatus();
}

void Transport::KickAfterRestore() {
  if (!active_) return;
  if (absl::Status s = device_->Restored(); !s.ok()) {
    Fail(s);
    return;
  }
  for (uint16_t i = 0; i < queues_.size() && i < 64; ++i) {
    if (!queues_[i].active()) continue;
    interrupt().SignalQueue(i);
    Notify(i);
  }
}

}  // namespace virtio
