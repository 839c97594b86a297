#include "libs/virtio/testing/mock_driver.h"

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

}  // namespace virtio::testing
