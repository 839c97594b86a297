#include "vm-memory/address.h"

#include <catch2/catch.hpp>
#include <cstdint>

using vm_memory::GuestAddress;
using vm_memory::HostAddress;
using vm_memory::RegionOffset;

TEST_CASE("CheckedAdd returns the sum or nullopt on overflow") {
  REQUIRE(GuestAddress(0x1000).CheckedAdd(0x10) == GuestAddress(0x1010));
  REQUIRE(GuestAddress(UINT64_MAX - 1).CheckedAdd(1) ==
          GuestAddress(UINT64_MAX));
  REQUIRE_FALSE(GuestAddress(UINT64_MAX).CheckedAdd(1).has_value());
  REQUIRE_FALSE(RegionOffset(2).CheckedAdd(UINT64_MAX - 1).has_value());
}

TEST_CASE("CheckedSub and OffsetFrom refuse to go below zero") {
  REQUIRE(HostAddress(10).CheckedSub(10) == HostAddress(0));
  REQUIRE_FALSE(HostAddress(9).CheckedSub(10).has_value());
  REQUIRE(GuestAddress(0x2000).OffsetFrom(GuestAddress(0x1000)) == 0x1000u);
  REQUIRE_FALSE(GuestAddress(0x1000).OffsetFrom(GuestAddress(0x2000)));
}

TEST_CASE("IsAligned treats alignment 0 as never aligned") {
  REQUIRE(GuestAddress(0x2000).IsAligned(0x1000));
  REQUIRE_FALSE(GuestAddress(0x2001).IsAligned(0x1000));
  REQUIRE_FALSE(GuestAddress(0).IsAligned(0));
}
