// MockDriver: the driver side of one split virtqueue, for tests and
// fuzzers that play the guest. It lays the rings out in a GuestMemory,
// builds chains (direct or indirect), and reads back what the device
// used. Raw setters let hostile tests write anything at all.
//
//   MockDriver drv(mem, GuestAddress(0x10000), 16);
//   drv.Configure(queue);                        // what the transport does
//   uint16_t head = drv.AddChain({{buf, 512, false}, {status, 1, true}});
//   device.ProcessQueue(0);
//   REQUIRE(drv.used_idx() == 1);
#ifndef VIRTIO_TESTING_MOCK_DRIVER_H_
#define VIRTIO_TESTING_MOCK_DRIVER_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "virtio/queue.h"

namespace virtio::testing {

struct MockBuffer {
  uint64_t addr;
  uint32_t len;
  bool writable;
};

class MockDriver {
 public:
  // Rings at `base` (descriptors, then avail, then used at the next
  // 4-byte boundary); indirect tables go after them, 4 KiB per chain.
  MockDriver(GuestMemory& mem, GuestAddress base, uint16_t size);

  void Configure(Queue& q) const;
  // Adds a chain and publishes it; returns its head.
  uint16_t AddChain(const std::vector<MockBuffer>& bufs, bool indirect = false);
  void SetDesc(uint16_t index, const VirtqDesc& d);
  void WriteIndirect(GuestAddress table, const std::vector<VirtqDesc>& descs);
  // Puts `head` in the next avail slot and bumps avail idx by `step`.
  void Publish(uint16_t head, uint16_t step = 1);
  void SetAvailIdx(uint16_t idx);
  void SetAvailFlags(uint16_t flags);
  void SetUsedEvent(uint16_t v);

  uint16_t used_idx() const;
  uint16_t avail_event() const;
  VirtqUsedElem used(uint16_t i) const;  // ring slot i % size
  GuestAddress desc_table() const { return desc_; }
  GuestAddress avail_ring() const { return avail_; }
  GuestAddress used_ring() const { return used_; }
  // Free memory for test buffers: after the rings and indirect tables.
  GuestAddress scratch() const { return scratch_; }

 private:
  GuestMemory& mem_;
  uint16_t size_;
  GuestAddress desc_, avail_, used_, indirect_, scratch_;
  uint16_t next_desc_ = 0;
  uint16_t avail_idx_ = 0;
  uint32_t indirect_used_ = 0;
};

// The driver side of one packed virtqueue (spec 2.8): the descriptor ring at
// `base`, then the driver and device event areas; indirect tables after.
//
//   PackedMockDriver drv(mem, GuestAddress(0x10000), 16);
//   drv.Configure(queue);  // then Activate with Bit(kFRingPacked)
//   uint16_t id = drv.AddChain({{buf, 512, false}, {status, 1, true}});
//   device.ProcessQueue(0);
//   std::optional<PackedUsed> u = drv.PopUsed();   // id, len
struct PackedUsed {
  uint16_t id;
  uint32_t len;
  uint16_t flags;
};

class PackedMockDriver {
 public:
  PackedMockDriver(GuestMemory& mem, GuestAddress base, uint16_t size);

  void Configure(Queue& q) const;
  // Writes the chain's descriptors (the first one's flags last) with the
  // next free buffer ID, or `id` if given; returns the ID.
  uint16_t AddChain(const std::vector<MockBuffer>& bufs, bool indirect = false,
                    std::optional<uint16_t> id = std::nullopt);
  // Writes one raw descriptor at ring slot `index` (hostile tests).
  void SetDesc(uint16_t index, const PackedDesc& d);
  // The available flags for the current driver wrap counter.
  uint16_t AvailFlags() const;
  // The next used descriptor, if the device wrote one.
  std::optional<PackedUsed> PopUsed();
  // Driver event suppression: flags (kRingEvent*) and, for kRingEventDesc,
  // the ring offset and wrap counter to be notified at.
  void SetDriverEvent(uint16_t flags, uint16_t off = 0, bool wrap = false);
  uint16_t device_event_flags() const;
  uint16_t next_avail() const { return next_avail_; }
  bool avail_wrap() const { return avail_wrap_; }
  GuestAddress scratch() const { return scratch_; }

 private:
  GuestMemory& mem_;
  uint16_t size_;
  GuestAddress desc_, driver_, device_, indirect_, scratch_;
  uint16_t next_avail_ = 0, next_used_ = 0;
  bool avail_wrap_ = true, used_wrap_ = true;
  uint16_t next_id_ = 0;
  std::vector<uint16_t> chain_len_;  // per buffer ID
  uint32_t indirect_used_ = 0;
};

}  // namespace virtio::testing

#endif  // VIRTIO_TESTING_MOCK_DRIVER_H_
