#include "vcpu/devices/ioapic.h"

#include <catch2/catch.hpp>
#include <vector>

using vcpu::Ioapic;

namespace {

struct Harness {
  std::vector<std::pair<uint64_t, uint32_t>> msis;
  Ioapic ioapic{2, [this](uint64_t a, uint32_t d) { msis.emplace_back(a, d); }};
  void WriteReg(uint32_t index, uint32_t value) {
    ioapic.Write(0x00, {reinterpret_cast<uint8_t*>(&index), 4});
    ioapic.Write(0x10, {reinterpret_cast<uint8_t*>(&value), 4});
  }
  uint32_t ReadReg(uint32_t index) {
    ioapic.Write(0x00, {reinterpret_cast<uint8_t*>(&index), 4});
    uint32_t v = 0;
    ioapic.Read(0x10, {reinterpret_cast<uint8_t*>(&v), 4});
    return v;
  }
  void Route(uint32_t pin, uint64_t entry) {
    WriteReg(0x10 + 2 * pin + 1, static_cast<uint32_t>(entry >> 32));
    WriteReg(0x10 + 2 * pin, static_cast<uint32_t>(entry));
  }
};

}  // namespace

TEST_CASE("IOAPIC identifies itself and starts with every pin masked") {
  Harness h;
  REQUIRE(h.ReadReg(0x00) == (2u << 24));
  REQUIRE(h.ReadReg(0x01) == 0x00170011);
  for (uint32_t pin = 0; pin < Ioapic::kPins; ++pin) {
    REQUIRE(h.ioapic.redirection(pin) & (1u << 16));
  }
  h.ioapic.SetIrq(4, true);
  REQUIRE(h.msis.empty());
}

TEST_CASE("An edge pin sends one MSI per rising edge to its destination") {
  Harness h;
  h.Route(4, (3ULL << 56) | 0x31);  // vector 0x31, fixed, physical, APIC 3
  h.ioapic.SetIrq(4, true);
  h.ioapic.SetIrq(4, true);  // still high: no new edge
  h.ioapic.SetIrq(4, false);
  h.ioapic.SetIrq(4, true);
  REQUIRE(h.msis.size() == 2);
  REQUIRE(h.msis[0].first == 0xfee03000);
  REQUIRE(h.msis[0].second == 0x31);
  REQUIRE(h.ReadReg(0x10 + 9) == (3u << 24));
}

TEST_CASE("A level pin waits for the EOI and re-fires while still asserted") {
  Harness h;
  h.Route(9, (1ULL << 15) | 0x41);  // level, vector 0x41, APIC 0
  h.ioapic.SetIrq(9, true);
  REQUIRE(h.msis.size() == 1);
  REQUIRE((h.msis[0].second & (1u << 15)) != 0);
  REQUIRE(h.ioapic.redirection(9) & (1u << 14));  // remote IRR
  h.ioapic.SetIrq(9, true);
  REQUIRE(h.msis.size() == 1);  // not before the EOI
  h.ioapic.EndOfInterrupt(0x41);
  REQUIRE(h.msis.size() == 2);  // line still up
  h.ioapic.SetIrq(9, false);
  h.ioapic.EndOfInterrupt(0x41);
  REQUIRE(h.msis.size() == 2);
  REQUIRE_FALSE(h.ioapic.redirection(9) & (1u << 14));
}

TEST_CASE("Guest writes cannot set remote IRR; bad indexes are ignored") {
  Harness h;
  h.WriteReg(0x10, 0xffffffff);
  REQUIRE_FALSE(h.ioapic.redirection(0) & (1u << 14));
  h.WriteReg(0x10 + 2 * Ioapic::kPins, 0x1234);  // past the table
  REQUIRE(h.ReadReg(0x10 + 2 * Ioapic::kPins) == 0);
  h.ioapic.SetIrq(99, true);
  REQUIRE(h.msis.empty());
}
