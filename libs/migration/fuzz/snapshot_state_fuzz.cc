// libFuzzer: a snapshot's state.pb as an attacker writes it. Parsing,
// validation and every decoder must fail cleanly, never crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "migration/snapshot.h"
#include "migration/state_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto s = migration::ParseSnapshot(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (!s.ok()) return 0;
  for (const auto& v : s->vcpus()) {
    (void)migration::DecodeVcpu(v);
    (void)migration::DecodeCpuid(v);
  }
  (void)migration::DecodeClock(s->kvm_clock());
  if (s->irqchip().has_ioapic()) (void)migration::DecodeIoapic(s->irqchip().ioapic());
  if (s->irqchip().has_kernel()) (void)migration::DecodeKernelIrqchip(s->irqchip().kernel());
  for (const auto& d : s->devices()) {
    if (d.has_serial()) (void)migration::DecodeSerial(d.serial());
  }
  return 0;
}
