// Queue::SaveState / RestoreState: a queue's configuration and ring
// positions for snapshots and migration. The state may come from a file or
// a network peer, so every value is checked before the queue uses it.
#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "virtio/queue.h"

namespace virtio {

QueueState Queue::SaveState() const {
  QueueState s;
  s.size = size_;
  s.ready = ready_;
  s.desc = desc_.value;
  s.avail = avail_.value;
  s.used = used_.value;
  s.active = active();
  s.next_avail = next_avail_;
  s.next_used = next_used_;
  if (packed_) {
    s.avail_pos = avail_pos_;
    s.used_pos = used_pos_;
    s.avail_wrap = avail_wrap_;
    s.used_wrap = used_wrap_;
    s.in_flight = in_flight_;
  }
  return s;
}

absl::Status Queue::RestoreState(const QueueState& state, GuestMemory& mem, uint64_t features) {
  Reset();
  if (state.size == 0 || state.size > max_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("queue size ", state.size, " is not between 1 and ", max_size_));
  }
  size_ = state.size;
  ready_ = state.ready;
  desc_ = GuestAddress(state.desc);
  avail_ = GuestAddress(state.avail);
  used_ = GuestAddress(state.used);
  if (!state.active) return absl::OkStatus();
  if (!state.ready) return absl::InvalidArgumentError("an active queue must be ready");
  RETURN_IF_ERROR(Activate(mem, features));
  if (packed_) return RestorePackedPositions(state);
  if (!state.in_flight.empty()) {
    return absl::InvalidArgumentError("a split queue has no in-flight table");
  }
  set_indices(state.next_avail, state.next_used);
  // What the driver made available must not run more than a ring ahead.
  ASSIGN_OR_RETURN(uint16_t avail_idx, AvailIdx());
  if (static_cast<uint16_t>(avail_idx - next_avail_) > size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "next available index ", next_avail_, " is more than the queue size behind the ",
        "driver's ", avail_idx));
  }
  return absl::OkStatus();
}

absl::Status Queue::RestorePackedPositions(const QueueState& state) {
  if (state.avail_pos >= size_ || state.used_pos >= size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "packed ring positions ", state.avail_pos, "/", state.used_pos,
        " are outside the ring of ", size_));
  }
  if (state.in_flight.size() != size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "packed in-flight table has ", state.in_flight.size(), " entries, not ", size_));
  }
  uint32_t held = 0;
  for (uint16_t n : state.in_flight) held += n;
  if (held > size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "packed in-flight chains hold ", held, " descriptors, more than the ring's ", size_));
  }
  avail_pos_ = state.avail_pos;
  used_pos_ = signalled_pos_ = state.used_pos;
  avail_wrap_ = state.avail_wrap;
  used_wrap_ = state.used_wrap;
  next_avail_ = state.next_avail;
  next_used_ = signalled_used_ = state.next_used;
  signalled_valid_ = false;
  in_flight_ = state.in_flight;
  return absl::OkStatus();
}

}  // namespace virtio
