// Drives the UART, i8042 and CMOS state machines with arbitrary register
// reads, writes and input, as a hostile guest could.
#include <cstdint>

#include "vcpu/devices/legacy.h"
#include "vcpu/devices/serial.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t out_bytes = 0;
  vcpu::Serial uart([&](uint8_t) { ++out_bytes; }, [] {});
  vcpu::I8042 kbd([] {});
  vcpu::CmosRtc rtc(1 << 30, [] { return time_t{0}; });
  vcpu::BusDevice* devs[] = {&uart, &kbd, &rtc};
  for (size_t i = 0; i + 2 < size; i += 3) {
    uint8_t op = data[i], reg = data[i + 1], val = data[i + 2];
    vcpu::BusDevice& d = *devs[op % 3];
    if (op & 0x80) {
      d.Write(reg % 9, {&val, 1});
    } else if (op & 0x40) {
      uart.EnqueueInput(std::string_view(reinterpret_cast<const char*>(&val), 1));
    } else {
      uint8_t v;
      d.Read(reg % 9, {&v, 1});
    }
  }
  if (uart.InputQueued() > vcpu::Serial::kInputCapacity) __builtin_trap();
  return 0;
}
