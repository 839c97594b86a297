// Packed virtqueues (virtio 1.2, 2.8), device side. Same rules as the
// split ring: every guest-controlled number is bounded before use and any
// violation is an error naming it.
//
// The device reads descriptors in ring order from avail_pos_ (wrap counter
// avail_wrap_): one is available when its AVAIL flag equals the counter
// and its USED flag does not. A chain is the descriptors up to the first
// without NEXT; its buffer ID is in the last one. Used descriptors are
// written in completion order from used_pos_, one per chain, and the
// position then skips as many slots as the chain took.
#include <atomic>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "libs/virtio/src/queue_util.h"
#include "virtio/queue.h"

namespace virtio {

using queue_internal::CheckRing;
using queue_internal::Hex;

namespace {

constexpr uint16_t kMaxPackedSize = 1 << 15;  // spec 2.8
constexpr uint64_t kFlagsOffset = 14;         // PackedDesc::flags

bool IsAvailable(uint16_t flags, bool wrap) {
  const bool avail = flags & kPackedDescFAvail;
  const bool used = flags & kPackedDescFUsed;
  return avail == wrap && used != wrap;
}

}  // namespace

absl::Status Queue::ActivatePacked(GuestMemory& mem) {
  if (size_ == 0 || size_ > max_size_ || size_ > kMaxPackedSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("packed queue size ", size_, " is not between 1 and ", max_size_));
  }
  RETURN_IF_ERROR(CheckRing(mem, "descriptor ring", desc_, 16ULL * size_, 16));
  RETURN_IF_ERROR(CheckRing(mem, "driver event area", avail_, 4, 4));
  RETURN_IF_ERROR(CheckRing(mem, "device event area", used_, 4, 4));
  mem_ = &mem;
  avail_pos_ = used_pos_ = signalled_pos_ = 0;
  avail_wrap_ = used_wrap_ = true;
  next_avail_ = next_used_ = signalled_used_ = 0;
  signalled_valid_ = false;
  in_flight_.assign(size_, 0);
  return absl::OkStatus();
}

absl::StatusOr<bool> Queue::PackedAvailable() const {
  ASSIGN_OR_RETURN(uint16_t flags,
                   mem_->LoadAtomic16(GuestAddress(desc_.value + 16ULL * avail_pos_ + kFlagsOffset)));
  return IsAvailable(flags, avail_wrap_);
}

absl::StatusOr<std::optional<DescriptorChain>> Queue::PopPacked() {
  ASSIGN_OR_RETURN(bool available, PackedAvailable());
  if (!available) return std::nullopt;
  // The rest of the chain only after seeing the flag that publishes it.
  std::atomic_thread_fence(std::memory_order_acquire);
  DescriptorChain chain;
  uint16_t pos = avail_pos_;
  bool wrap = avail_wrap_;
  uint16_t taken = 0;
  PackedDesc d;
  while (true) {
    if (taken == size_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "packed descriptor chain at ", avail_pos_, " is longer than the queue size ", size_));
    }
    ASSIGN_OR_RETURN(d, mem_->ReadObj<PackedDesc>(GuestAddress(desc_.value + 16ULL * pos)));
    if (!IsAvailable(d.flags, wrap)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "packed descriptor ", pos, " continues a chain but is not available (flags ",
          Hex(d.flags), ")"));
    }
    ++taken;
    if (++pos == size_) {
      pos = 0;
      wrap = !wrap;
    }
    if (d.flags & kDescFIndirect) {
      if (taken > 1 || (d.flags & kDescFNext)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "packed descriptor ", avail_pos_, ": an indirect descriptor in a NEXT chain"));
      }
      RETURN_IF_ERROR(ReadPackedIndirect(d, chain));
      break;
    }
    RETURN_IF_ERROR(AddBuffer({d.addr, d.len, static_cast<uint16_t>(d.flags & kDescFWrite), 0},
                              chain));
    if (!(d.flags & kDescFNext)) break;
  }
  if (d.id >= size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("packed buffer ID ", d.id, " is outside the queue (size ", size_, ")"));
  }
  if (in_flight_[d.id] != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("packed buffer ID ", d.id, " is made available while still in flight"));
  }
  in_flight_[d.id] = taken;
  chain.head = d.id;
  avail_pos_ = pos;
  avail_wrap_ = wrap;
  ++next_avail_;
  return chain;
}

absl::Status Queue::ReadPackedIndirect(const PackedDesc& d, DescriptorChain& chain) const {
  ASSIGN_OR_RETURN(uint32_t n, IndirectEntries(d.addr, d.len));
  // Every entry is one element, in order; only WRITE means anything.
  for (uint32_t i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(PackedDesc e, mem_->ReadObj<PackedDesc>(GuestAddress(d.addr + 16ULL * i)));
    RETURN_IF_ERROR(AddBuffer({e.addr, e.len, static_cast<uint16_t>(e.flags & kDescFWrite), 0},
                              chain));
  }
  return absl::OkStatus();
}

absl::Status Queue::PushUsedPacked(uint16_t id, uint32_t len) {
  if (id >= size_ || in_flight_[id] == 0) {
    return absl::InvalidArgumentError(absl::StrCat("used buffer ID ", id, " is not in flight"));
  }
  const uint16_t taken = in_flight_[id];
  in_flight_[id] = 0;
  const uint64_t at = desc_.value + 16ULL * used_pos_;
  RETURN_IF_ERROR(mem_->WriteObj(GuestAddress(at + 8), len));
  RETURN_IF_ERROR(mem_->WriteObj(GuestAddress(at + 12), id));
  // ID and length must be visible before the flags that hand them over.
  std::atomic_thread_fence(std::memory_order_release);
  uint16_t flags = used_wrap_ ? (kPackedDescFAvail | kPackedDescFUsed) : 0;
  if (len > 0) flags |= kDescFWrite;
  RETURN_IF_ERROR(mem_->StoreAtomic16(GuestAddress(at + kFlagsOffset), flags));
  used_pos_ += taken;
  if (used_pos_ >= size_) {
    used_pos_ -= size_;
    used_wrap_ = !used_wrap_;
  }
  ++next_used_;
  return absl::OkStatus();
}

bool Queue::NeedsInterruptPacked() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t old_count = signalled_used_, old_pos = signalled_pos_;
  const bool had_old = signalled_valid_;
  signalled_used_ = next_used_;
  signalled_pos_ = used_pos_;
  signalled_valid_ = true;
  if (had_old && old_count == next_used_) return false;  // nothing new
  absl::StatusOr<uint16_t> flags = mem_->LoadAtomic16(GuestAddress(avail_.value + 2));
  if (!flags.ok()) return true;
  switch (*flags & 3) {
    case kRingEventDisable:
      return false;
    case kRingEventDesc:
      break;
    default:  // ENABLE, or the reserved value
      return true;
  }
  if (!event_idx_ || !had_old) return true;
  // As a split ring's vring_need_event, with both positions unwrapped
  // against the current wrap counter: did used_pos_ step past the event
  // offset since the last decision?
  absl::StatusOr<uint16_t> off_wrap = mem_->LoadAtomic16(avail_);
  if (!off_wrap.ok()) return true;
  if (static_cast<uint16_t>(next_used_ - old_count) >= size_) return true;  // a full lap
  int32_t event = *off_wrap & 0x7fff;
  if (((*off_wrap >> 15) != 0) != used_wrap_) event -= size_;
  int32_t old = old_pos;
  if (used_pos_ <= old_pos) old -= size_;
  const int32_t now = used_pos_;
  return static_cast<uint16_t>(now - event - 1) < static_cast<uint16_t>(now - old);
}

absl::StatusOr<bool> Queue::EnableNotificationPacked(bool enable) {
  RETURN_IF_ERROR(mem_->StoreAtomic16(GuestAddress(used_.value + 2),
                                      enable ? kRingEventEnable : kRingEventDisable));
  if (!enable) return false;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return PackedAvailable();
}

}  // namespace virtio
