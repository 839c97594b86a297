// Drives the UART, i8042, CMOS and IOAPIC state machines with arbitrary register
// reads, writes and input, as a hostile guest could.
#include <cstdint>

#include "vcpu/devices/ioapic.h"
#include "vcpu/devices/legacy.h"
#include "vcpu/devices/serial.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t out_bytes = 0;
  vcpu::Serial uart([&](uint8_t) { ++out_bytes; }, [] {});
  vcpu::I8042 kbd([] {});
  vcpu::CmosRtc rtc(1 << 30, [] { return time_t{0}; });
  size_t msis = 0;
  vcpu::Ioapic ioapic(1, [&](uint64_t, uint32_t) { ++msis; });
  vcpu::BusDevice* devs[] = {&uart, &kbd, &rtc, &ioapic};
  for (size_t i = 0; i + 2 < size; i += 3) {
    uint8_t op = data[i], reg = data[i + 1], val = data[i + 2];
    vcpu::BusDevice& d = *devs[op % 4];
    if ((op & 0x30) == 0x30) {
      ioapic.SetIrq(reg % 32, val & 1);
      if (val & 2) ioapic.EndOfInterrupt(reg);
    } else if (op & 0x80) {
      uint32_t word = val * 0x01010101u;
      bool is_ioapic = &d == static_cast<vcpu::BusDevice*>(&ioapic);
      d.Write(is_ioapic ? (reg & 0x10) : reg % 9,
              {reinterpret_cast<uint8_t*>(&word), 4});
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
