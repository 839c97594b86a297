#include "block/raw.h"

#include <catch2/catch.hpp>
#include <cstring>

#include "libs/block/src/test_util.h"

using namespace block;
using block_test::Pattern;
using block_test::TempDir;

TEST_CASE("raw images are sparse and discard punches holes") {
  TempDir dir;
  const std::string path = dir.Path("disk.raw");
  REQUIRE(RawImage::Create(path, 64 << 20).ok());
  auto img = RawImage::Open(path, {});
  REQUIRE(img.ok());
  RawImage& r = **img;
  REQUIRE(r.size() == (64u << 20));
  REQUIRE(*r.file().AllocatedBytes() < (64u << 10));
  auto data = Pattern(8 << 20, 1);
  REQUIRE(r.Write(1 << 20, data.data(), data.size()).ok());
  REQUIRE(r.Flush().ok());
  REQUIRE(*r.file().AllocatedBytes() >= (8u << 20));

  auto e = r.BlockStatus(0, 64 << 20);
  REQUIRE(e.ok());
  REQUIRE(e->kind == ExtentKind::kZero);
  REQUIRE(e->length == (1u << 20));
  e = r.BlockStatus(1 << 20, 63 << 20);
  REQUIRE(e->kind == ExtentKind::kData);
  REQUIRE(e->length == (8u << 20));

  REQUIRE(r.Discard(1 << 20, 8 << 20).ok());
  REQUIRE(*r.file().AllocatedBytes() < (1u << 20));
  std::vector<uint8_t> back(4096, 0xff);
  REQUIRE(r.Read(2 << 20, back.data(), back.size()).ok());
  REQUIRE(std::all_of(back.begin(), back.end(), [](uint8_t b) { return b == 0; }));
}

TEST_CASE("raw read, write-zeroes, resize and range errors") {
  TempDir dir;
  const std::string path = dir.Path("disk.raw");
  REQUIRE(RawImage::Create(path, 1 << 20).ok());
  auto img = RawImage::Open(path, {});
  REQUIRE(img.ok());
  RawImage& r = **img;
  auto data = Pattern(10000, 7);
  REQUIRE(r.Write(12345, data.data(), data.size()).ok());
  REQUIRE(r.WriteZeroes(13000, 100).ok());
  std::fill(data.begin() + (13000 - 12345), data.begin() + (13100 - 12345), 0);
  std::vector<uint8_t> back(data.size());
  REQUIRE(r.Read(12345, back.data(), back.size()).ok());
  REQUIRE((back == data));
  absl::Status s = r.Read((1 << 20) - 10, back.data(), 20);
  REQUIRE(absl::IsOutOfRange(s));
  REQUIRE(s.message().find("outside") != std::string::npos);
  REQUIRE(r.Resize(2 << 20).ok());
  REQUIRE(r.size() == (2u << 20));
  REQUIRE(r.Read((1 << 20) - 10, back.data(), 20).ok());
}
