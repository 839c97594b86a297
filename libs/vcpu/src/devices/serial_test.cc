#include "vcpu/devices/serial.h"

#include <catch2/catch.hpp>
#include <string>

using vcpu::Serial;

namespace {

struct Harness {
  std::string out;
  int irqs = 0;
  std::shared_ptr<Serial> uart = std::make_shared<Serial>(
      [this](uint8_t b) { out.push_back(static_cast<char>(b)); },
      [this] { ++irqs; });
  uint8_t In(uint64_t reg) {
    uint8_t v;
    uart->Read(reg, {&v, 1});
    return v;
  }
  void Out(uint64_t reg, uint8_t v) { uart->Write(reg, {&v, 1}); }
};

}  // namespace

TEST_CASE("Bytes written to THR reach the output sink") {
  Harness h;
  for (char c : std::string("hi\n")) h.Out(0, c);
  REQUIRE(h.out == "hi\n");
  REQUIRE((h.In(5) & 0x60) == 0x60);  // THR empty, transmitter empty
  REQUIRE(h.irqs == 0);               // no interrupts enabled
}

TEST_CASE("Input is readable through RBR with data-ready and an interrupt") {
  Harness h;
  h.Out(1, 0x01);  // IER: received data available
  REQUIRE(h.uart->EnqueueInput("ab") == 2);
  REQUIRE(h.irqs == 1);
  REQUIRE((h.In(2) & 0x0f) == 0x04);  // IIR: RDA
  REQUIRE((h.In(5) & 1) == 1);
  REQUIRE(h.In(0) == 'a');
  REQUIRE(h.In(0) == 'b');
  REQUIRE((h.In(5) & 1) == 0);
  REQUIRE((h.In(2) & 0x0f) == 0x01);  // no interrupt pending
}

TEST_CASE("THRE interrupt fires on enable and after each byte") {
  Harness h;
  h.Out(1, 0x02);
  REQUIRE(h.irqs == 1);
  REQUIRE((h.In(2) & 0x0f) == 0x02);  // reading IIR clears THRE
  REQUIRE((h.In(2) & 0x0f) == 0x01);
  h.Out(0, 'x');
  REQUIRE(h.irqs == 2);
}

TEST_CASE("DLAB switches data/IER to the divisor latch") {
  Harness h;
  h.Out(3, 0x80);
  h.Out(0, 0x01);
  h.Out(1, 0x00);
  REQUIRE(h.In(0) == 0x01);
  REQUIRE(h.out.empty());  // the divisor write is not output
  h.Out(3, 0x03);
  h.Out(0, 'z');
  REQUIRE(h.out == "z");
}

TEST_CASE("Loopback mode feeds output back as input") {
  Harness h;
  h.Out(4, 0x10);
  h.Out(0, 'q');
  REQUIRE(h.out.empty());
  REQUIRE(h.In(0) == 'q');
}

TEST_CASE("The input queue is bounded") {
  Harness h;
  std::string big(Serial::kInputCapacity + 100, 'a');
  REQUIRE(h.uart->EnqueueInput(big) == Serial::kInputCapacity);
  REQUIRE(h.uart->InputQueued() == Serial::kInputCapacity);
}
