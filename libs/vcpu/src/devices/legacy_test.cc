#include "vcpu/devices/legacy.h"

#include <catch2/catch.hpp>

using namespace vcpu;

namespace {
uint8_t In(BusDevice& d, uint64_t off) {
  uint8_t v;
  d.Read(off, {&v, 1});
  return v;
}
void Out(BusDevice& d, uint64_t off, uint8_t v) { d.Write(off, {&v, 1}); }
}  // namespace

TEST_CASE("i8042: command 0xfe resets, other commands do not") {
  int resets = 0;
  I8042 kbd([&] { ++resets; });
  Out(kbd, 4, 0x20);  // read command byte
  REQUIRE((In(kbd, 4) & 1) == 1);
  REQUIRE(In(kbd, 0) == 0);
  REQUIRE((In(kbd, 4) & 1) == 0);
  Out(kbd, 4, 0xaa);  // self test
  REQUIRE(In(kbd, 0) == 0x55);
  REQUIRE(resets == 0);
  Out(kbd, 4, 0xfe);
  REQUIRE(resets == 1);
}

TEST_CASE("i8042: output port write with bit 0 low resets") {
  int resets = 0;
  I8042 kbd([&] { ++resets; });
  Out(kbd, 4, 0xd1);
  Out(kbd, 0, 0x01);
  REQUIRE(resets == 0);
  Out(kbd, 4, 0xd1);
  Out(kbd, 0, 0x00);
  REQUIRE(resets == 1);
}

TEST_CASE("Debug exit passes the guest's byte") {
  int got = -1;
  DebugExit e([&](uint8_t v) { got = v; });
  Out(e, 0, 42);
  REQUIRE(got == 42);
  Out(e, 1, 7);  // only the first port of the range counts
  REQUIRE(got == 42);
}

TEST_CASE("ACPI sleep control: SLP_TYP 5 with SLP_EN powers off, nothing else does") {
  int offs = 0;
  AcpiSleep s([&] { offs++; });
  Out(s, 0, 5 << 2);  // S5 without SLP_EN: only selects the type
  Out(s, 0, (1 << 2) | 0x20);  // S1: not offered, ignored
  Out(s, 1, (5 << 2) | 0x20);  // the status register is not the control one
  REQUIRE(offs == 0);
  REQUIRE(In(s, 1) == 0);
  Out(s, 0, (5 << 2) | 0x20);
  REQUIRE(offs == 1);
}

TEST_CASE("CMOS RTC reports the injected time in BCD") {
  // 2026-11-22 03:04:05 UTC, a Sunday.
  CmosRtc rtc(256 << 20, [] { return time_t{1795316645}; });
  auto reg = [&](uint8_t i) {
    Out(rtc, 0, i);
    return In(rtc, 1);
  };
  REQUIRE(reg(0x00) == 0x05);
  REQUIRE(reg(0x02) == 0x04);
  REQUIRE(reg(0x04) == 0x03);
  REQUIRE(reg(0x07) == 0x22);
  REQUIRE(reg(0x08) == 0x11);
  REQUIRE(reg(0x09) == 0x26);
  REQUIRE(reg(0x32) == 0x20);
  REQUIRE(reg(0x06) == 0x01);
  REQUIRE((reg(0x0a) & 0x80) == 0);  // never update-in-progress
  // 256 MiB: (256 - 16) MiB above 16 MiB in 64 KiB units = 3840 = 0x0f00.
  REQUIRE(reg(0x34) == 0x00);
  REQUIRE(reg(0x35) == 0x0f);
  Out(rtc, 0, 0x40);
  Out(rtc, 1, 0x99);
  REQUIRE(In(rtc, 1) == 0x99);  // NVRAM is writable
  Out(rtc, 0, 0x00);
  Out(rtc, 1, 0x59);
  REQUIRE(In(rtc, 1) == 0x05);  // the clock is not
}
