#include "vm-memory/dirty_bitmap.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <thread>
#include <vector>

using vm_memory::DirtyBitmap;

TEST_CASE("MarkRange marks every page the range touches, and no other") {
  DirtyBitmap b(100 * 4096, 4096);
  b.MarkRange(4095, 2);  // straddles pages 0 and 1
  REQUIRE(b.IsDirty(0));
  REQUIRE(b.IsDirty(4096));
  REQUIRE_FALSE(b.IsDirty(2 * 4096));
  REQUIRE(b.CountDirtyPages() == 2);
}

TEST_CASE("MarkRange across a 64-page word boundary and to the end") {
  DirtyBitmap b(130 * 4096, 4096);
  b.MarkRange(60 * 4096, 10 * 4096);  // pages 60..69
  REQUIRE(b.CountDirtyPages() == 10);
  b.MarkRange(129 * 4096, UINT64_MAX);  // clipped at the last page
  REQUIRE(b.IsDirty(129 * 4096));
  REQUIRE(b.CountDirtyPages() == 11);
  b.MarkRange(200 * 4096, 4096);  // entirely outside: ignored
  REQUIRE(b.CountDirtyPages() == 11);
  b.MarkRange(0, 0);
  REQUIRE(b.CountDirtyPages() == 11);
}

TEST_CASE("TakeAndClear returns the words and leaves the bitmap clean") {
  DirtyBitmap b(128 * 4096, 4096);
  b.MarkRange(0, 4096);
  b.MarkRange(64 * 4096 + 5, 1);
  std::vector<uint64_t> words = b.TakeAndClear();
  REQUIRE(words.size() == 2);
  REQUIRE(words[0] == 1);
  REQUIRE(words[1] == 1);
  REQUIRE(b.CountDirtyPages() == 0);
}

TEST_CASE("Marking from many threads loses no page") {
  DirtyBitmap b(64 * 1024 * 4096ULL, 4096);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&b, t] {
      for (uint64_t p = t; p < 64 * 1024; p += 4) b.MarkRange(p * 4096, 1);
    });
  }
  for (auto& th : threads) th.join();
  REQUIRE(b.CountDirtyPages() == 64 * 1024);
}
