#include "vcpu/bus.h"

#include <catch2/catch.hpp>
#include <vector>

using namespace vcpu;

namespace {

class Recorder : public BusDevice {
 public:
  void Read(uint64_t offset, std::span<uint8_t> data) override {
    for (auto& b : data) b = static_cast<uint8_t>(offset);
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    writes.push_back({offset, data[0]});
  }
  std::vector<std::pair<uint64_t, uint8_t>> writes;
};

}  // namespace

TEST_CASE("Bus routes by range and passes offsets") {
  Bus bus;
  auto a = std::make_shared<Recorder>();
  auto b = std::make_shared<Recorder>();
  REQUIRE(bus.Insert(a, 0x3f8, 8, "uart").ok());
  REQUIRE(bus.Insert(b, 0x400, 0x10, "other").ok());
  uint8_t v = 0x41;
  REQUIRE(bus.Write(0x3fd, {&v, 1}));
  REQUIRE(a->writes.size() == 1);
  REQUIRE(a->writes[0].first == 5);
  uint8_t r[2];
  REQUIRE(bus.Read(0x40e, r));
  REQUIRE(r[0] == 0xe);
}

TEST_CASE("Bus: unclaimed and straddling accesses are not delivered") {
  Bus bus;
  auto a = std::make_shared<Recorder>();
  REQUIRE(bus.Insert(a, 0x100, 4).ok());
  uint8_t r[4] = {0, 0, 0, 0};
  REQUIRE_FALSE(bus.Read(0x200, r));
  REQUIRE(r[0] == 0xff);               // open bus
  REQUIRE_FALSE(bus.Read(0x102, r));   // 4 bytes at 0x102 leave the device
  REQUIRE_FALSE(bus.Write(0xfe, r));
  REQUIRE(a->writes.empty());
}

TEST_CASE("Bus refuses overlapping or wrapping ranges, naming both") {
  Bus bus;
  auto a = std::make_shared<Recorder>();
  REQUIRE(bus.Insert(a, 0x100, 0x10, "first").ok());
  absl::Status s = bus.Insert(a, 0x108, 0x10, "second");
  REQUIRE(s.code() == absl::StatusCode::kAlreadyExists);
  REQUIRE(std::string(s.message()).find("first") != std::string::npos);
  REQUIRE_FALSE(bus.Insert(a, 0xf8, 0x10, "third").ok());
  REQUIRE(bus.Insert(a, 0x110, 0x10, "adjacent").ok());
  REQUIRE_FALSE(bus.Insert(a, ~0ULL - 4, 0x10, "wrap").ok());
  REQUIRE_FALSE(bus.Insert(a, 0x1000, 0, "empty").ok());
}

TEST_CASE("Bus::Clear drops every device and the bus's references") {
  Bus bus;
  auto a = std::make_shared<Recorder>();
  REQUIRE(bus.Insert(a, 0x3f8, 8, "uart").ok());
  REQUIRE(a.use_count() == 2);
  bus.Clear();
  REQUIRE(a.use_count() == 1);  // the owner decides when it goes
  uint8_t v = 0;
  REQUIRE_FALSE(bus.Write(0x3f8, {&v, 1}));
  REQUIRE(bus.Insert(a, 0x3f8, 8, "uart").ok());  // the range is free again
}
