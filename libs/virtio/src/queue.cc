#include "virtio/queue.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "libs/virtio/src/queue_util.h"

namespace virtio {
using queue_internal::CheckRing;
using queue_internal::Hex;
using queue_internal::kMaxIndirect;
using queue_internal::kRingHeader;

Queue::Queue(uint16_t max_size) : max_size_(max_size), size_(max_size) {}

void Queue::Reset() {
  size_ = max_size_;
  ready_ = false;
  desc_ = avail_ = used_ = GuestAddress(0);
  mem_ = nullptr;
  event_idx_ = indirect_ = false;
  next_avail_ = next_used_ = signalled_used_ = 0;
  signalled_valid_ = false;
  packed_ = false;
  avail_pos_ = used_pos_ = signalled_pos_ = 0;
  avail_wrap_ = used_wrap_ = true;
  in_flight_.clear();
}

absl::Status Queue::Activate(GuestMemory& mem, uint64_t features) {
  packed_ = features & Bit(kFRingPacked);
  event_idx_ = features & Bit(kFEventIdx);
  indirect_ = features & Bit(kFIndirectDesc);
  if (packed_) return ActivatePacked(mem);
  if (size_ == 0 || size_ > max_size_ || (size_ & (size_ - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "queue size ", size_, " is not a power of 2 between 1 and ", max_size_));
  }
  RETURN_IF_ERROR(CheckRing(mem, "descriptor table", desc_, 16ULL * size_, 16));
  RETURN_IF_ERROR(CheckRing(mem, "available ring", avail_, kRingHeader + 2ULL * size_ + 2, 2));
  RETURN_IF_ERROR(CheckRing(mem, "used ring", used_, kRingHeader + 8ULL * size_ + 2, 4));
  mem_ = &mem;
  signalled_valid_ = false;
  return absl::OkStatus();
}

void Queue::set_indices(uint16_t next_avail, uint16_t next_used) {
  next_avail_ = next_avail;
  next_used_ = next_used;
  signalled_valid_ = false;
}

absl::StatusOr<uint16_t> Queue::AvailIdx() const {
  // The driver moves this index while we read it: one 16-bit load.
  return mem_->LoadAtomic16(GuestAddress(avail_.value + 2));
}

absl::StatusOr<std::optional<DescriptorChain>> Queue::Pop() {
  if (mem_ == nullptr) return absl::FailedPreconditionError("queue is not active");
  if (packed_) return PopPacked();
  ASSIGN_OR_RETURN(uint16_t avail_idx, AvailIdx());
  uint16_t pending = avail_idx - next_avail_;
  if (pending == 0) return std::nullopt;
  if (pending > size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "available index jumped from ", next_avail_, " to ", avail_idx,
        ", more than the queue size ", size_));
  }
  // Read the ring entry only after seeing the index that publishes it.
  std::atomic_thread_fence(std::memory_order_acquire);
  GuestAddress slot(avail_.value + kRingHeader + 2ULL * (next_avail_ % size_));
  ASSIGN_OR_RETURN(uint16_t head, mem_->ReadObj<uint16_t>(slot));
  DescriptorChain chain;
  chain.head = head;
  RETURN_IF_ERROR(ReadChain(head, chain));
  ++next_avail_;
  if (event_idx_) {
    // avail_event: notify again as soon as anything new is made available.
    RETURN_IF_ERROR(mem_->StoreAtomic16(
        GuestAddress(used_.value + kRingHeader + 8ULL * size_), next_avail_));
  }
  return chain;
}

absl::Status Queue::ReadChain(uint16_t head, DescriptorChain& chain) const {
  uint32_t budget = size_;  // a chain is never longer than the queue
  uint16_t idx = head;
  while (true) {
    if (idx >= size_) {
      return absl::InvalidArgumentError(
          absl::StrCat("descriptor index ", idx, " is outside the queue (size ", size_, ")"));
    }
    if (budget-- == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "descriptor chain from head ", head, " is longer than the queue size ", size_,
          " (a loop?)"));
    }
    ASSIGN_OR_RETURN(VirtqDesc d, mem_->ReadObj<VirtqDesc>(GuestAddress(desc_.value + 16ULL * idx)));
    if (d.flags & kDescFIndirect) {
      if (d.flags & kDescFNext) {
        return absl::InvalidArgumentError(
            absl::StrCat("descriptor ", idx, " sets both INDIRECT and NEXT"));
      }
      return ReadIndirect(d, chain);
    }
    RETURN_IF_ERROR(AddBuffer(d, chain));
    if (!(d.flags & kDescFNext)) return absl::OkStatus();
    idx = d.next;
  }
}

absl::StatusOr<uint32_t> Queue::IndirectEntries(uint64_t addr, uint32_t len) const {
  if (!indirect_) {
    return absl::InvalidArgumentError(
        "indirect descriptor, but VIRTIO_F_INDIRECT_DESC was not negotiated");
  }
  if (len == 0 || len % 16 != 0 || len / 16 > kMaxIndirect) {
    return absl::InvalidArgumentError(absl::StrCat(
        "indirect table length ", len, " is not a multiple of 16 between 16 and ",
        16 * kMaxIndirect));
  }
  if (!mem_->CheckRange(GuestAddress(addr), len)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "indirect table at ", Hex(addr), " (", len, " bytes) is not in guest RAM"));
  }
  return len / 16;
}

absl::Status Queue::ReadIndirect(const VirtqDesc& d, DescriptorChain& chain) const {
  ASSIGN_OR_RETURN(uint32_t n, IndirectEntries(d.addr, d.len));
  uint32_t idx = 0;
  for (uint32_t steps = 0;; ++steps) {
    if (steps == n) {
      return absl::InvalidArgumentError(
          absl::StrCat("indirect chain is longer than its table of ", n, " (a loop?)"));
    }
    ASSIGN_OR_RETURN(VirtqDesc e, mem_->ReadObj<VirtqDesc>(GuestAddress(d.addr + 16ULL * idx)));
    if (e.flags & kDescFIndirect) {
      return absl::InvalidArgumentError("indirect table inside an indirect table");
    }
    RETURN_IF_ERROR(AddBuffer(e, chain));
    if (!(e.flags & kDescFNext)) return absl::OkStatus();
    if (e.next >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat("indirect descriptor next ", e.next, " is outside its table of ", n));
    }
    idx = e.next;
  }
}

absl::Status Queue::AddBuffer(const VirtqDesc& d, DescriptorChain& chain) const {
  bool writable = d.flags & kDescFWrite;
  if (!writable && chain.writable_bytes > 0) {
    return absl::InvalidArgumentError("device-readable descriptor after a device-writable one");
  }
  if (d.len > 0 && !mem_->CheckRange(GuestAddress(d.addr), d.len)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "buffer at ", Hex(d.addr), " (", d.len, " bytes) is not in guest RAM"));
  }
  // At most 1024 + 256 buffers of < 4 GiB each: the sums cannot wrap 64 bits.
  (writable ? chain.writable_bytes : chain.readable_bytes) += d.len;
  chain.buffers.push_back({GuestAddress(d.addr), d.len, writable});
  return absl::OkStatus();
}

absl::Status Queue::PushUsed(uint16_t head, uint32_t len) {
  if (mem_ == nullptr) return absl::FailedPreconditionError("queue is not active");
  if (packed_) return PushUsedPacked(head, len);
  if (head >= size_) {
    return absl::InvalidArgumentError(absl::StrCat("used head ", head, " is outside the queue"));
  }
  VirtqUsedElem e{head, len};
  RETURN_IF_ERROR(mem_->WriteObj(
      GuestAddress(used_.value + kRingHeader + 8ULL * (next_used_ % size_)), e));
  // The element must be visible before the index that publishes it.
  std::atomic_thread_fence(std::memory_order_release);
  ++next_used_;
  return mem_->StoreAtomic16(GuestAddress(used_.value + 2), next_used_);
}

bool Queue::NeedsInterrupt() {
  if (mem_ == nullptr) return false;
  if (packed_) return NeedsInterruptPacked();
  // Our used-index write must be ordered before reading the driver's
  // suppression fields (spec 2.7.10's full barrier).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint16_t old = signalled_used_;
  bool had_old = signalled_valid_;
  signalled_used_ = next_used_;
  signalled_valid_ = true;
  if (had_old && old == next_used_) return false;  // nothing new
  if (event_idx_) {
    absl::StatusOr<uint16_t> ev =
        mem_->LoadAtomic16(GuestAddress(avail_.value + kRingHeader + 2ULL * size_));
    if (!ev.ok() || !had_old) return true;
    // vring_need_event: did next_used_ step past used_event since `old`?
    return static_cast<uint16_t>(next_used_ - *ev - 1) < static_cast<uint16_t>(next_used_ - old);
  }
  absl::StatusOr<uint16_t> flags = mem_->LoadAtomic16(avail_);
  return !flags.ok() || !(*flags & kAvailFNoInterrupt);
}

absl::StatusOr<bool> Queue::EnableNotification(bool enable) {
  if (mem_ == nullptr) return absl::FailedPreconditionError("queue is not active");
  if (packed_) return EnableNotificationPacked(enable);
  if (event_idx_) {
    if (enable) {
      RETURN_IF_ERROR(mem_->StoreAtomic16(
          GuestAddress(used_.value + kRingHeader + 8ULL * size_), next_avail_));
    }
  } else {
    RETURN_IF_ERROR(mem_->StoreAtomic16(used_, enable ? 0 : kUsedFNoNotify));
  }
  if (!enable) return false;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  ASSIGN_OR_RETURN(uint16_t avail_idx, AvailIdx());
  return avail_idx != next_avail_;
}

// ---- ChainReader / ChainWriter ----

namespace {

template <typename Pred>
std::vector<Buffer> Select(const DescriptorChain& c, Pred keep) {
  std::vector<Buffer> out;
  for (const Buffer& b : c.buffers) {
    if (keep(b) && b.len > 0) out.push_back(b);
  }
  return out;
}

// Walks `len` bytes of `bufs` from (index, offset), calling fn(addr, n)
// per piece; fails before calling fn if fewer than `len` bytes remain.
template <typename Fn>
absl::Status Walk(const std::vector<Buffer>& bufs, size_t& index, uint64_t& offset,
                  uint64_t& remaining, uint64_t len, Fn&& fn) {
  if (len > remaining) {
    return absl::OutOfRangeError(
        absl::StrCat("request needs ", len, " more bytes, the buffers hold ", remaining));
  }
  while (len > 0) {
    const Buffer& b = bufs[index];
    uint64_t n = std::min<uint64_t>(len, b.len - offset);
    RETURN_IF_ERROR(fn(GuestAddress(b.addr.value + offset), n));
    len -= n;
    remaining -= n;
    offset += n;
    if (offset == b.len) {
      ++index;
      offset = 0;
    }
  }
  return absl::OkStatus();
}

absl::Status AppendSlices(GuestMemory& mem, GuestAddress a, uint64_t n,
                          vm_memory::Access access, std::vector<iovec>& out) {
  ASSIGN_OR_RETURN(std::vector<vm_memory::VolatileSlice> s, mem.GetSlices(a, n, access));
  for (const auto& v : s) out.push_back(v.AsIovec());
  return absl::OkStatus();
}

}  // namespace

ChainReader::ChainReader(GuestMemory& mem, const DescriptorChain& chain)
    : mem_(mem), bufs_(Select(chain, [](const Buffer& b) { return !b.writable; })) {
  remaining_ = chain.readable_bytes;
}

absl::Status ChainReader::Read(std::span<uint8_t> out) {
  uint64_t done = 0;
  return Walk(bufs_, index_, offset_, remaining_, out.size(),
              [&](GuestAddress a, uint64_t n) {
                RETURN_IF_ERROR(mem_.Read(a, out.subspan(done, n)));
                done += n;
                return absl::OkStatus();
              });
}

absl::StatusOr<std::vector<iovec>> ChainReader::TakeIovecs(uint64_t len) {
  std::vector<iovec> out;
  RETURN_IF_ERROR(Walk(bufs_, index_, offset_, remaining_, len, [&](GuestAddress a, uint64_t n) {
    return AppendSlices(mem_, a, n, vm_memory::Access::kRead, out);
  }));
  return out;
}

ChainWriter::ChainWriter(GuestMemory& mem, const DescriptorChain& chain)
    : mem_(mem), bufs_(Select(chain, [](const Buffer& b) { return b.writable; })) {
  remaining_ = chain.writable_bytes;
}

absl::Status ChainWriter::Write(std::span<const uint8_t> data) {
  uint64_t done = 0;
  RETURN_IF_ERROR(Walk(bufs_, index_, offset_, remaining_, data.size(),
                       [&](GuestAddress a, uint64_t n) {
                         RETURN_IF_ERROR(mem_.Write(a, data.subspan(done, n)));
                         done += n;
                         return absl::OkStatus();
                       }));
  written_ += data.size();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<iovec>> ChainWriter::TakeIovecs(uint64_t len) {
  std::vector<iovec> out;
  RETURN_IF_ERROR(Walk(bufs_, index_, offset_, remaining_, len, [&](GuestAddress a, uint64_t n) {
    return AppendSlices(mem_, a, n, vm_memory::Access::kWrite, out);
  }));
  written_ += len;
  return out;
}

}  // namespace virtio
