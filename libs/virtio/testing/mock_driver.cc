#include "libs/virtio/testing/mock_driver.h"

#include <atomic>
#include <cstdlib>

namespace virtio::testing {
namespace {

template <typename T>
void Put(GuestMemory& mem, uint64_t addr, const T& v) {
  if (!mem.WriteObj(GuestAddress(addr), v).ok()) std::abort();  // test bug
}
template <typename T>
T Get(const GuestMemory& mem, uint64_t addr) {
  auto v = mem.ReadObj<T>(GuestAddress(addr));
  if (!v.ok()) std::abort();
  return *v;
}

constexpr uint64_t kIndirectBytes = 4096;
constexpr uint32_t kIndirectSlots = 64;

}  // namespace

MockDriver::MockDriver(GuestMemory& mem, GuestAddress base, uint16_t size)
    : mem_(mem), size_(size) {
  desc_ = base;
  avail_ = GuestAddress(base.value + 16ULL * size);
  used_ = GuestAddress((avail_.value + 6 + 2ULL * size + 3) & ~3ULL);
  indirect_ = GuestAddress((used_.value + 6 + 8ULL * size + 4095) & ~4095ULL);
  scratch_ = GuestAddress(indirect_.value + kIndirectBytes * kIndirectSlots);
  if (!mem.ZeroRange(base, scratch_.value - base.value).ok()) std::abort();
}

void MockDriver::Configure(Queue& q) const {
  q.set_size(size_);
  q.set_desc_table(desc_);
  q.set_avail_ring(avail_);
  q.set_used_ring(used_);
  q.set_ready(true);
}

void MockDriver::SetDesc(uint16_t index, const VirtqDesc& d) {
  Put(mem_, desc_.value + 16ULL * index, d);
}

void MockDriver::WriteIndirect(GuestAddress table, const std::vector<VirtqDesc>& descs) {
  for (size_t i = 0; i < descs.size(); ++i) Put(mem_, table.value + 16 * i, descs[i]);
}

uint16_t MockDriver::AddChain(const std::vector<MockBuffer>& bufs, bool indirect) {
  std::vector<VirtqDesc> descs;
  for (size_t i = 0; i < bufs.size(); ++i) {
    uint16_t flags = bufs[i].writable ? kDescFWrite : 0;
    if (i + 1 < bufs.size()) flags |= kDescFNext;
    descs.push_back({bufs[i].addr, bufs[i].len, flags, 0});
  }
  uint16_t head = next_desc_;
  if (indirect) {
    for (size_t i = 0; i + 1 < descs.size(); ++i) descs[i].next = static_cast<uint16_t>(i + 1);
    GuestAddress table(indirect_.value + kIndirectBytes * (indirect_used_++ % kIndirectSlots));
    WriteIndirect(table, descs);
    SetDesc(head, {table.value, static_cast<uint32_t>(16 * descs.size()), kDescFIndirect, 0});
    next_desc_ = (next_desc_ + 1) % size_;
  } else {
    for (size_t i = 0; i < descs.size(); ++i) {
      uint16_t idx = next_desc_;
      next_desc_ = (next_desc_ + 1) % size_;
      descs[i].next = next_desc_;
      SetDesc(idx, descs[i]);
    }
  }
  Publish(head);
  return head;
}

void MockDriver::Publish(uint16_t head, uint16_t step) {
  Put<uint16_t>(mem_, avail_.value + 4 + 2ULL * (avail_idx_ % size_), head);
  SetAvailIdx(avail_idx_ + step);
}

void MockDriver::SetAvailIdx(uint16_t idx) {
  avail_idx_ = idx;
  Put<uint16_t>(mem_, avail_.value + 2, idx);
}

void MockDriver::SetAvailFlags(uint16_t flags) { Put<uint16_t>(mem_, avail_.value, flags); }
void MockDriver::SetUsedEvent(uint16_t v) {
  Put<uint16_t>(mem_, avail_.value + 4 + 2ULL * size_, v);
}
uint16_t MockDriver::used_idx() const { return Get<uint16_t>(mem_, used_.value + 2); }
uint16_t MockDriver::avail_event() const {
  return Get<uint16_t>(mem_, used_.value + 4 + 8ULL * size_);
}
VirtqUsedElem MockDriver::used(uint16_t i) const {
  return Get<VirtqUsedElem>(mem_, used_.value + 4 + 8ULL * (i % size_));
}

// ---- PackedMockDriver ----

PackedMockDriver::PackedMockDriver(GuestMemory& mem, GuestAddress base, uint16_t size)
    : mem_(mem), size_(size), chain_len_(size, 0) {
  desc_ = base;
  driver_ = GuestAddress(base.value + 16ULL * size);
  device_ = GuestAddress(driver_.value + 4);
  indirect_ = GuestAddress((device_.value + 4 + 4095) & ~4095ULL);
  scratch_ = GuestAddress(indirect_.value + kIndirectBytes * kIndirectSlots);
  if (!mem.ZeroRange(base, scratch_.value - base.value).ok()) std::abort();
}

void PackedMockDriver::Configure(Queue& q) const {
  q.set_size(size_);
  q.set_desc_table(desc_);
  q.set_avail_ring(driver_);
  q.set_used_ring(device_);
  q.set_ready(true);
}

uint16_t PackedMockDriver::AvailFlags() const {
  return avail_wrap_ ? kPackedDescFAvail : kPackedDescFUsed;
}

void PackedMockDriver::SetDesc(uint16_t index, const PackedDesc& d) {
  Put(mem_, desc_.value + 16ULL * index, d);
}

uint16_t PackedMockDriver::AddChain(const std::vector<MockBuffer>& bufs, bool indirect,
                                    std::optional<uint16_t> want_id) {
  uint16_t id = want_id ? *want_id : next_id_;
  if (!want_id) next_id_ = static_cast<uint16_t>((next_id_ + 1) % size_);
  std::vector<PackedDesc> descs;
  if (indirect) {
    GuestAddress table(indirect_.value + kIndirectBytes * (indirect_used_++ % kIndirectSlots));
    for (size_t i = 0; i < bufs.size(); ++i) {
      Put(mem_, table.value + 16 * i,
          PackedDesc{bufs[i].addr, bufs[i].len, 0,
                     static_cast<uint16_t>(bufs[i].writable ? kDescFWrite : 0)});
    }
    descs.push_back({table.value, static_cast<uint32_t>(16 * bufs.size()), id, kDescFIndirect});
  } else {
    for (size_t i = 0; i < bufs.size(); ++i) {
      uint16_t flags = bufs[i].writable ? kDescFWrite : 0;
      if (i + 1 < bufs.size()) flags |= kDescFNext;
      descs.push_back({bufs[i].addr, bufs[i].len, id, flags});
    }
  }
  const uint16_t first = next_avail_;
  uint16_t first_flags = 0;
  for (size_t i = 0; i < descs.size(); ++i) {
    PackedDesc d = descs[i];
    d.flags |= AvailFlags();
    if (i == 0) {
      first_flags = d.flags;
      d.flags = 0;  // never available: the real flags are published last
    }
    SetDesc(next_avail_, d);
    if (++next_avail_ == size_) {
      next_avail_ = 0;
      avail_wrap_ = !avail_wrap_;
    }
  }
  if (id < size_) chain_len_[id] = static_cast<uint16_t>(descs.size());
  std::atomic_thread_fence(std::memory_order_release);
  Put<uint16_t>(mem_, desc_.value + 16ULL * first + 14, first_flags);
  return id;
}

std::optional<PackedUsed> PackedMockDriver::PopUsed() {
  const uint64_t at = desc_.value + 16ULL * next_used_;
  uint16_t flags = Get<uint16_t>(mem_, at + 14);
  const bool used = flags & kPackedDescFUsed;
  const bool avail = flags & kPackedDescFAvail;
  if (used != used_wrap_ || avail != used_wrap_) return std::nullopt;
  std::atomic_thread_fence(std::memory_order_acquire);
  PackedUsed u{Get<uint16_t>(mem_, at + 12), Get<uint32_t>(mem_, at + 8), flags};
  uint16_t skip = u.id < size_ && chain_len_[u.id] ? chain_len_[u.id] : 1;
  next_used_ = static_cast<uint16_t>(next_used_ + skip);
  if (next_used_ >= size_) {
    next_used_ -= size_;
    used_wrap_ = !used_wrap_;
  }
  return u;
}

void PackedMockDriver::SetDriverEvent(uint16_t flags, uint16_t off, bool wrap) {
  Put<uint16_t>(mem_, driver_.value, static_cast<uint16_t>(off | (wrap ? 0x8000 : 0)));
  Put<uint16_t>(mem_, driver_.value + 2, flags);
}

uint16_t PackedMockDriver::device_event_flags() const {
  return Get<uint16_t>(mem_, device_.value + 2);
}

}  // namespace virtio::testing
