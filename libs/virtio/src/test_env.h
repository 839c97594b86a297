// Shared by the virtio unit tests: a small guest memory and a recording
// Interrupt.
#ifndef VIRTIO_TEST_ENV_H_
#define VIRTIO_TEST_ENV_H_

#include <atomic>
#include <memory>

#include "libs/virtio/testing/mock_driver.h"
#include "virtio/device.h"
#include "vm-memory/guest_memory.h"

namespace virtio::test {

inline constexpr uint64_t kRamSize = 4 << 20;  // 0 .. 4 MiB

inline std::unique_ptr<vm_memory::GuestMemory> MakeMemory() {
  vm_memory::RegionSpec spec{vm_memory::GuestAddress(0), kRamSize};
  auto mem = vm_memory::GuestMemory::Create({&spec, 1});
  if (!mem.ok()) std::abort();
  return std::move(*mem);
}

struct CountingInterrupt : Interrupt {
  void SignalQueue(uint16_t) override { ++queue; }
  void SignalConfig() override { ++config; }
  std::atomic<int> queue{0};
  std::atomic<int> config{0};
};

// A queue wired to a mock driver and activated, as a transport would.
struct QueueEnv {
  explicit QueueEnv(uint16_t size = 16, uint64_t features = Bit(kFIndirectDesc))
      : mem(MakeMemory()), queue(256), driver(*mem, GuestAddress(0x10000), size) {
    driver.Configure(queue);
    if (!queue.Activate(*mem, features).ok()) std::abort();
  }
  std::unique_ptr<vm_memory::GuestMemory> mem;
  Queue queue;
  testing::MockDriver driver;
};

}  // namespace virtio::test

#endif  // VIRTIO_TEST_ENV_H_
