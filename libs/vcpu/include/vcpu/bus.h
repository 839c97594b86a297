// Bus: routes a vCPU's port I/O or MMIO exit to the device that owns the
// address. One Bus for ports, one for MMIO.
//
//   Bus pio;
//   RETURN_IF_ERROR(pio.Insert(serial, 0x3f8, 8));
//   if (!pio.Write(port, data)) { /* nobody there: ignore */ }
//
// Devices are added before the vCPUs start; lookups after that take a
// shared lock only. Each device serialises its own state.
#ifndef VCPU_BUS_H_
#define VCPU_BUS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace vcpu {

class BusDevice {
 public:
  virtual ~BusDevice() = default;
  // `offset` is relative to the base the device was inserted at.
  virtual void Read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void Write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class Bus {
 public:
  absl::Status Insert(std::shared_ptr<BusDevice> device, uint64_t base,
                      uint64_t len, std::string name = "");
  // Removes the device inserted at `base` (e.g. a PCI BAR the guest moves);
  // false if there is none.
  bool Remove(uint64_t base);
  // Removes every device (a VMM tearing down: the devices' owners decide
  // when they are destroyed). Releases them outside the bus's lock.
  void Clear();
  // False when no device covers [addr, addr + data.size()); a read then
  // returns all ones, as an open bus does.
  bool Read(uint64_t addr, std::span<uint8_t> data) const;
  bool Write(uint64_t addr, std::span<const uint8_t> data) const;

 private:
  struct Range {
    uint64_t len;
    std::shared_ptr<BusDevice> device;
    std::string name;
  };
  // The device whose range holds the whole access, and its base.
  const Range* Find(uint64_t addr, uint64_t len, uint64_t* base) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<uint64_t, Range> ranges_ ABSL_GUARDED_BY(mu_);  // by base
};

}  // namespace vcpu

#endif  // VCPU_BUS_H_
