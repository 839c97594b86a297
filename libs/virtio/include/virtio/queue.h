// Queue: the device side of a virtqueue (virtio 1.2), split (2.7) or, when
// VIRTIO_F_RING_PACKED is negotiated, packed (2.8), written for a hostile
// driver. The API is the same for both; a packed queue's "head" is the
// buffer ID of the chain (desc/avail/used addresses are then the
// descriptor ring, the driver area and the device area).
//
// Every index and length the guest controls is bounded before use: a
// descriptor walk stops after `size` descriptors (indirect ones included),
// an indirect table inside an indirect table is refused, lengths add up in
// 64 bits with overflow checks, the available index may not run more than
// `size` ahead (packed: a buffer ID is below `size` and not already in
// flight), and every buffer must lie in guest RAM. Any violation is
// returned as an error naming what was wrong; the transport then puts the
// device into DEVICE_NEEDS_RESET. The queue never touches memory outside
// GuestMemory.
//
//   Queue q(256);
//   q.set_size(128); q.set_desc_table(...); ...   // from the transport
//   RETURN_IF_ERROR(q.Activate(mem, features));
//   while (true) {
//     ASSIGN_OR_RETURN(std::optional<DescriptorChain> c, q.Pop());
//     if (!c) break;
//     ... serve the request ...
//     RETURN_IF_ERROR(q.PushUsed(c->head, written));
//   }
//   if (q.NeedsInterrupt()) irq.Notify();
//
// One thread at a time uses a queue (the device's event-loop thread);
// the transport only writes its configuration while the device is not
// running.
#ifndef VIRTIO_QUEUE_H_
#define VIRTIO_QUEUE_H_

#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "virtio/types.h"
#include "vm-memory/guest_memory.h"

namespace virtio {

using vm_memory::GuestAddress;
using vm_memory::GuestMemory;

// One buffer of a chain, already checked to lie inside guest RAM.
struct Buffer {
  GuestAddress addr;
  uint32_t len = 0;
  bool writable = false;  // device-writable
};

// A request as the driver made it available: device-readable buffers
// first, then device-writable ones (the queue enforces that order).
struct DescriptorChain {
  uint16_t head = 0;
  std::vector<Buffer> buffers;
  uint64_t readable_bytes = 0;
  uint64_t writable_bytes = 0;
};

// A queue's configuration and ring positions, for snapshots and
// migration. Taken while the device is quiesced: every chain it popped has
// gone back to the driver (packed rings record what is still in flight).
struct QueueState {
  uint16_t size = 0;
  bool ready = false;
  uint64_t desc = 0, avail = 0, used = 0;
  bool active = false;  // activated with the transport's features
  uint16_t next_avail = 0, next_used = 0;
  // Packed rings: positions, wrap counters and per buffer ID the number of
  // descriptors it holds (size entries).
  uint16_t avail_pos = 0, used_pos = 0;
  bool avail_wrap = true, used_wrap = true;
  std::vector<uint16_t> in_flight;
};

class Queue {
 public:
  explicit Queue(uint16_t max_size = kMaxQueueSize);

  // ---- configuration, written by the transport before activation ----
  uint16_t max_size() const { return max_size_; }
  uint16_t size() const { return size_; }
  void set_size(uint16_t size) { size_ = size; }
  bool ready() const { return ready_; }
  void set_ready(bool ready) { ready_ = ready; }
  GuestAddress desc_table() const { return desc_; }
  GuestAddress avail_ring() const { return avail_; }
  GuestAddress used_ring() const { return used_; }
  void set_desc_table(GuestAddress a) { desc_ = a; }
  void set_avail_ring(GuestAddress a) { avail_ = a; }
  void set_used_ring(GuestAddress a) { used_ = a; }

  // Checks size and ring placement and takes the negotiated features
  // (EVENT_IDX, INDIRECT_DESC). The rings must not cross a RAM region.
  absl::Status Activate(GuestMemory& mem, uint64_t features);
  bool active() const { return mem_ != nullptr; }
  // Back to the reset state (size = max, addresses 0, not ready).
  void Reset();

  // The next available chain, or nullopt when the driver has made none.
  absl::StatusOr<std::optional<DescriptorChain>> Pop();
  // Returns a chain to the driver with `len` bytes written into it.
  absl::Status PushUsed(uint16_t head, uint32_t len);
  // Whether the driver wants an interrupt for what was pushed since the
  // last call (VIRTQ_AVAIL_F_NO_INTERRUPT or used_event, spec 2.7.10).
  bool NeedsInterrupt();
  // Tells the driver whether to notify (EVENT_IDX: avail_event; otherwise
  // VIRTQ_USED_F_NO_NOTIFY), e.g. off while draining and on before
  // waiting again. Returns true if more chains arrived meanwhile.
  absl::StatusOr<bool> EnableNotification(bool enable);

  bool packed() const { return packed_; }
  uint16_t next_avail() const { return next_avail_; }
  // Split: the used index. Packed: how many buffers went back (mod 2^16).
  uint16_t next_used() const { return next_used_; }
  // For snapshots: where a restored queue resumes.
  void set_indices(uint16_t next_avail, uint16_t next_used);

  QueueState SaveState() const;
  // Loads a saved queue into this (reset) one. An active one is activated
  // with `features`, as the driver's DRIVER_OK would, which checks its
  // size and ring placement against `mem`; then its positions are checked
  // (packed: inside the ring, in-flight counts adding up to at most the
  // size) and taken. A bad value is an error naming it.
  absl::Status RestoreState(const QueueState& state, GuestMemory& mem, uint64_t features);

 private:
  absl::StatusOr<uint16_t> AvailIdx() const;
  absl::Status ReadChain(uint16_t head, DescriptorChain& chain) const;
  // Checks an indirect table (negotiated, length, in RAM) for both ring
  // layouts; returns how many descriptors it holds.
  absl::StatusOr<uint32_t> IndirectEntries(uint64_t addr, uint32_t len) const;
  absl::Status ReadIndirect(const VirtqDesc& d, DescriptorChain& chain) const;
  absl::Status AddBuffer(const VirtqDesc& d, DescriptorChain& chain) const;
  // Packed rings (queue_packed.cc).
  absl::Status ActivatePacked(GuestMemory& mem);
  absl::StatusOr<std::optional<DescriptorChain>> PopPacked();
  absl::Status ReadPackedIndirect(const PackedDesc& d, DescriptorChain& chain) const;
  absl::Status PushUsedPacked(uint16_t id, uint32_t len);
  bool NeedsInterruptPacked();
  absl::StatusOr<bool> EnableNotificationPacked(bool enable);
  absl::StatusOr<bool> PackedAvailable() const;
  absl::Status RestorePackedPositions(const QueueState& state);

  uint16_t max_size_;
  uint16_t size_;
  bool ready_ = false;
  GuestAddress desc_, avail_, used_;
  GuestMemory* mem_ = nullptr;
  bool event_idx_ = false;
  bool indirect_ = false;
  uint16_t next_avail_ = 0;
  uint16_t next_used_ = 0;
  uint16_t signalled_used_ = 0;  // next_used_ at the last interrupt decision
  bool signalled_valid_ = false;
  // Packed: ring positions and wrap counters, the ring position at the last
  // interrupt decision, and per buffer ID the descriptors it took (0: not
  // in flight).
  bool packed_ = false;
  uint16_t avail_pos_ = 0, used_pos_ = 0, signalled_pos_ = 0;
  bool avail_wrap_ = true, used_wrap_ = true;
  std::vector<uint16_t> in_flight_;
};

// Reads a chain's device-readable bytes in order.
class ChainReader {
 public:
  ChainReader(GuestMemory& mem, const DescriptorChain& chain);
  uint64_t remaining() const { return remaining_; }
  // Copies exactly out.size() bytes or fails (nothing partial is counted).
  absl::Status Read(std::span<uint8_t> out);
  template <typename T>
  absl::StatusOr<T> ReadObj() {
    T v;
    absl::Status s = Read({reinterpret_cast<uint8_t*>(&v), sizeof(T)});
    if (!s.ok()) return s;
    return v;
  }
  // Host views of the next `len` readable bytes (zero-copy), consumed.
  absl::StatusOr<std::vector<iovec>> TakeIovecs(uint64_t len);

 private:
  GuestMemory& mem_;
  std::vector<Buffer> bufs_;
  size_t index_ = 0;
  uint64_t offset_ = 0;  // within bufs_[index_]
  uint64_t remaining_ = 0;
};

// Writes into a chain's device-writable buffers in order.
class ChainWriter {
 public:
  ChainWriter(GuestMemory& mem, const DescriptorChain& chain);
  uint64_t remaining() const { return remaining_; }
  uint64_t written() const { return written_; }
  absl::Status Write(std::span<const uint8_t> data);
  template <typename T>
  absl::Status WriteObj(const T& v) {
    return Write({reinterpret_cast<const uint8_t*>(&v), sizeof(T)});
  }
  // Host views of the next `len` writable bytes (marked dirty), consumed
  // and counted as written.
  absl::StatusOr<std::vector<iovec>> TakeIovecs(uint64_t len);

 private:
  GuestMemory& mem_;
  std::vector<Buffer> bufs_;
  size_t index_ = 0;
  uint64_t offset_ = 0;
  uint64_t remaining_ = 0;
  uint64_t written_ = 0;
};

}  // namespace virtio

#endif  // VIRTIO_QUEUE_H_
