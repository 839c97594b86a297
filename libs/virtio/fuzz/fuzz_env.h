// Shared by the virtio fuzz targets: a 256 KiB guest whose first bytes are
// the fuzzer's input, with a split queue at fixed places inside it.
#ifndef VIRTIO_FUZZ_ENV_H_
#define VIRTIO_FUZZ_ENV_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "virtio/device.h"
#include "virtio/queue.h"
#include "vm-memory/guest_memory.h"

namespace virtio::fuzz {

// Interrupts go nowhere in a fuzzer.
struct NullInterrupt : Interrupt {
  void SignalQueue(uint16_t) override {}
  void SignalConfig() override {}
};

inline constexpr uint64_t kRam = 256 << 10;
// The available ring first, so short inputs already publish chains.
inline constexpr uint64_t kAvail = 0x0, kDesc = 0x210, kUsed = 0x2000;

// The negotiated features the input's byte [1] switches on.
inline uint64_t FeaturesOf(const uint8_t* data, size_t size) {
  uint64_t features = 0;
  if (size > 1 && (data[1] & 1)) features |= Bit(kFIndirectDesc);
  if (size > 1 && (data[1] & 2)) features |= Bit(kFEventIdx);
  if (size > 1 && (data[1] & 4)) features |= Bit(kFRingPacked);
  return features;
}

// Input layout: [0] log2 queue size (mod 9), [1] feature switches
// (INDIRECT_DESC, EVENT_IDX, RING_PACKED), [2..] copied to guest address 0
// (avail ring or driver area, descriptor table or ring, buffers).
inline std::unique_ptr<vm_memory::GuestMemory> MakeGuest(const uint8_t* data, size_t size,
                                                        Queue& q) {
  vm_memory::RegionSpec spec{vm_memory::GuestAddress(0), kRam};
  auto mem = vm_memory::GuestMemory::Create({&spec, 1});
  if (!mem.ok()) return nullptr;
  size_t n = std::min<size_t>(size > 2 ? size - 2 : 0, kRam);
  if (n > 0 && !(*mem)->Write(vm_memory::GuestAddress(0), {data + 2, n}).ok()) return nullptr;
  q.set_size(static_cast<uint16_t>(1u << (size > 0 ? data[0] % 9 : 4)));
  q.set_desc_table(vm_memory::GuestAddress(kDesc));
  q.set_avail_ring(vm_memory::GuestAddress(kAvail));
  q.set_used_ring(vm_memory::GuestAddress(kUsed));
  q.set_ready(true);
  if (!q.Activate(**mem, FeaturesOf(data, size)).ok()) return nullptr;
  return std::move(*mem);
}

// Activates `q` on the same rings as the activated `from` (a device whose
// rx and tx then walk the same fuzzer-made chains); false if it fails.
inline bool ShareRings(vm_memory::GuestMemory& mem, const Queue& from, Queue& q,
                       uint64_t features) {
  q.set_size(from.size());
  q.set_desc_table(from.desc_table());
  q.set_avail_ring(from.avail_ring());
  q.set_used_ring(from.used_ring());
  q.set_ready(true);
  return q.Activate(mem, features).ok();
}

}  // namespace virtio::fuzz

#endif  // VIRTIO_FUZZ_ENV_H_
