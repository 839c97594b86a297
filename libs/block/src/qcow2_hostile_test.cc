// Hostile qcow2 images: every malformed field gives a clear error that names
// it (and its offset), never a crash, a hang or a huge allocation.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cstring>
#include <fstream>

#include "block/qcow2.h"
#include "libs/block/src/endian.h"
#include "libs/block/src/test_util.h"
#include "kindling/test_skip.h"

using namespace block;
using block::internal::StoreBe32;
using block::internal::StoreBe64;
using block_test::TempDir;

namespace {

std::vector<uint8_t> Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), {});
}

void Spit(const std::string& path, const std::vector<uint8_t>& d) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(d.data()), d.size());
}

// A small valid image with some data: 64 KiB clusters, 4 MiB.
std::vector<uint8_t> Valid(const TempDir& dir) {
  const std::string p = dir.Path("valid.qcow2");
  REQUIRE(Qcow2Image::Create(p, {.size = 4 << 20}).ok());
  {
    auto q = Qcow2Image::Open(p, {});
    REQUIRE(q.ok());
    std::vector<uint8_t> d(200000, 0x42);
    REQUIRE((*q)->Write(100000, d.data(), d.size()).ok());
  }
  return Slurp(p);
}

absl::Status OpenPatched(const TempDir& dir, std::vector<uint8_t> img,
                         bool read_only = true) {
  const std::string p = dir.Path("bad.qcow2");
  Spit(p, img);
  auto q = Qcow2Image::Open(p, {.read_only = read_only});
  if (!q.ok()) return q.status();
  std::vector<uint8_t> buf((*q)->size());
  return (*q)->Read(0, buf.data(), buf.size());
}

void ExpectError(const absl::Status& s, const std::string& needle) {
  INFO(s.ToString());
  REQUIRE_FALSE(s.ok());
  REQUIRE(s.message().find(needle) != std::string::npos);
}

}  // namespace

TEST_CASE("truncated and foreign headers") {
  TempDir dir;
  auto v = Valid(dir);
  ExpectError(OpenPatched(dir, {v.begin(), v.begin() + 50}), "truncated");
  ExpectError(OpenPatched(dir, {v.begin(), v.begin() + 100}), "truncated");
  auto m = v;
  m[0] = 'X';
  ExpectError(OpenPatched(dir, m), "magic");
  m = v;
  StoreBe32(&m[4], 4);
  ExpectError(OpenPatched(dir, m), "version");
}

TEST_CASE("header fields out of bounds name the field and offset") {
  TempDir dir;
  auto v = Valid(dir);
  struct Patch {
    size_t off;
    int width;
    uint64_t value;
    const char* needle;
  } patches[] = {
      {20, 4, 8, "cluster_bits (offset 20)"},
      {20, 4, 30, "cluster_bits (offset 20)"},
      {24, 8, 1ULL << 62, "size (offset 24)"},
      {24, 8, 1ULL << 40, "l1_size (offset 36)"},  // L1 too small for size
      {36, 4, 0xffffffff, "l1_size (offset 36)"},
      {40, 8, 1ULL << 40, "l1_table_offset (offset 40)"},
      {40, 8, 0x10001, "l1_table_offset (offset 40)"},
      {48, 8, 1ULL << 40, "refcount_table_offset (offset 48)"},
      {56, 4, 0, "refcount_table_clusters (offset 56)"},
      {56, 4, 1 << 20, "refcount_table_clusters (offset 56)"},
      {60, 4, 1 << 30, "nb_snapshots (offset 60)"},
      {60, 4, 3, "snapshots_offset (offset 64)"},  // table at offset 0
      {72, 8, 1ULL << 40, "incompatible_features (offset 72)"},
      {96, 4, 7, "refcount_order (offset 96)"},
      {100, 4, 50, "header_length (offset 100)"},
      {100, 4, 1 << 20, "header_length (offset 100)"},
      {32, 4, 1, "crypt_method (offset 32)"},
      {16, 4, 5000, "backing_file_size"},
  };
  for (const Patch& p : patches) {
    INFO("patch at " << p.off << " = " << p.value);
    auto m = v;
    if (p.off == 16) StoreBe64(&m[8], 0x200);
    if (p.width == 4) StoreBe32(&m[p.off], p.value);
    else StoreBe64(&m[p.off], p.value);
    ExpectError(OpenPatched(dir, m), p.needle);
  }
}

TEST_CASE("header extension that runs past the cluster") {
  TempDir dir;
  auto v = Valid(dir);
  StoreBe32(&v[112], 0x12345678);
  StoreBe32(&v[116], 0x7fffffff);
  ExpectError(OpenPatched(dir, v), "header extension");
}

TEST_CASE("tables pointing outside the file") {
  TempDir dir;
  auto v = Valid(dir);
  // L1 is the 4th cluster (header, reftable, refblock? no: reftable, L1,
  // refblock); find it from the header.
  uint64_t l1 = __builtin_bswap64(*reinterpret_cast<uint64_t*>(&v[40]));
  auto m = v;
  StoreBe64(&m[l1], (1ULL << 63) | (1ULL << 45));  // L2 far past EOF
  ExpectError(OpenPatched(dir, m), "past the end of the file");
  // Read-write: a write through it marks the image corrupt, and the next
  // read-write open is refused.
  const std::string p = dir.Path("bad.qcow2");
  Spit(p, m);
  {
    auto q = Qcow2Image::Open(p, {});
    REQUIRE(q.ok());
    char b[512] = {1};
    ExpectError((*q)->Write(0, b, sizeof b), "corrupt");
  }
  ExpectError(Qcow2Image::Open(p, {}).status(), "marked corrupt");
  REQUIRE(Qcow2Image::Open(p, {.read_only = true}).ok());
  // Unaligned L2 offset.
  m = v;
  StoreBe64(&m[l1], (1ULL << 63) | 0x30200);
  ExpectError(OpenPatched(dir, m), "unaligned");
  // Refcount table entry past EOF: the check reports it, nothing crashes.
  m = v;
  uint64_t rt = __builtin_bswap64(*reinterpret_cast<uint64_t*>(&m[48]));
  StoreBe64(&m[rt], 1ULL << 44);
  Spit(p, m);
  auto q = Qcow2Image::Open(p, {.read_only = true});
  REQUIRE(q.ok());
  auto r = (*q)->Check(RepairMode::kNone);
  REQUIRE(r.ok());
  REQUIRE((r->corruptions + r->check_errors) > 0);
}

TEST_CASE("refcount overflow is reported, not wrapped") {
  TempDir dir;
  const std::string p = dir.Path("rc1.qcow2");
  REQUIRE(Qcow2Image::Create(p, {.size = 1 << 20, .cluster_size = 4096,
                                 .refcount_bits = 1}).ok());
  {
    auto q = Qcow2Image::Open(p, {});
    REQUIRE(q.ok());
    std::vector<uint8_t> d(8192, 7);
    REQUIRE((*q)->Write(0, d.data(), d.size()).ok());
  }
  auto v = Slurp(p);
  uint64_t l1 = __builtin_bswap64(*reinterpret_cast<uint64_t*>(&v[40]));
  uint64_t l2 = __builtin_bswap64(*reinterpret_cast<uint64_t*>(&v[l1])) & 0x00fffffffffffe00ULL;
  // Point guest cluster 1 at guest cluster 0's host cluster: 2 references.
  memcpy(&v[l2 + 8], &v[l2], 8);
  Spit(p, v);
  auto q = Qcow2Image::Open(p, {.read_only = true});
  REQUIRE(q.ok());
  auto r = (*q)->Check(RepairMode::kNone);
  REQUIRE(r.ok());
  REQUIRE(r->corruptions > 0);
  bool overflow = false;
  for (const auto& msg : r->messages) overflow |= msg.find("overflow") != std::string::npos;
  REQUIRE(overflow);
}

TEST_CASE("garbage compressed cluster is a clear read error") {
  TempDir dir;
  auto v = Valid(dir);
  uint64_t l1 = __builtin_bswap64(*reinterpret_cast<uint64_t*>(&v[40]));
  uint64_t l2 = __builtin_bswap64(*reinterpret_cast<uint64_t*>(&v[l1])) & 0x00fffffffffffe00ULL;
  // Compressed entry pointing at the header: not deflate data.
  StoreBe64(&v[l2], (1ULL << 62) | (3ULL << 54) | 0x10);
  ExpectError(OpenPatched(dir, v), "compressed cluster");
}

TEST_CASE("dirty images are repaired on read-write open; corrupt refused") {
  TempDir dir;
  auto v = Valid(dir);
  auto m = v;
  StoreBe64(&m[72], 1);  // dirty
  const std::string p = dir.Path("dirty.qcow2");
  Spit(p, m);
  REQUIRE_FALSE(Qcow2Image::Open(p, {.repair_dirty = false}).ok());
  {
    auto q = Qcow2Image::Open(p, {});
    REQUIRE(q.ok());
    REQUIRE_FALSE((*q)->info().dirty);
  }
  auto q = Qcow2Image::Open(p, {.read_only = true});
  REQUIRE(q.ok());
  REQUIRE_FALSE((*q)->info().dirty);
  m = v;
  StoreBe64(&m[72], 2);  // corrupt
  Spit(p, m);
  ExpectError(Qcow2Image::Open(p, {}).status(), "corrupt");
  REQUIRE(Qcow2Image::Open(p, {.read_only = true}).ok());
}

TEST_CASE("an L1 table naming one L2 table many times is reported quickly") {
  TempDir dir;
  const std::string p = dir.Path("dup.qcow2");
  // 512-byte clusters: 64 L1 entries per cluster, many L1 entries in all.
  REQUIRE(Qcow2Image::Create(p, {.size = 1ULL << 30, .cluster_size = 512}).ok());
  {
    auto q = Qcow2Image::Open(p, {});
    REQUIRE(q.ok());
    char b[512] = {9};
    REQUIRE((*q)->Write(0, b, sizeof b).ok());
  }
  auto v = Slurp(p);
  uint64_t l1 = __builtin_bswap64(*reinterpret_cast<uint64_t*>(&v[40]));
  uint32_t l1_size = __builtin_bswap32(*reinterpret_cast<uint32_t*>(&v[36]));
  for (uint32_t i = 1; i < l1_size; ++i) memcpy(&v[l1 + i * 8], &v[l1], 8);
  Spit(p, v);
  auto q = Qcow2Image::Open(p, {.read_only = true});
  REQUIRE(q.ok());
  auto r = (*q)->Check(RepairMode::kNone);
  REQUIRE(r.ok());
  REQUIRE(r->corruptions >= l1_size - 1);
  char b[512];
  REQUIRE((*q)->Read(1 << 29, b, sizeof b).ok());  // reads still work
}

TEST_CASE("check -r all repairs entries past the end of the file") {
  TempDir dir;
  auto v = Valid(dir);  // 64 KiB clusters; data at guest 100000..300000
  const uint64_t l1 = __builtin_bswap64(*reinterpret_cast<uint64_t*>(&v[40]));
  const uint64_t l2 = __builtin_bswap64(*reinterpret_cast<uint64_t*>(&v[l1])) & ((1ULL << 56) - 512);
  const std::string p = dir.Path("eof.qcow2");

  SECTION("a data cluster past EOF reads as zeros; the corrupt mark goes") {
    auto m = v;
    StoreBe64(&m[l2 + 8], (1ULL << 63) | (1ULL << 40));  // guest cluster 1
    Spit(p, m);
    {
      auto q = Qcow2Image::Open(p, {});
      REQUIRE(q.ok());
      char b[512] = {1};
      ExpectError((*q)->Write(65536, b, sizeof b), "corrupt");  // marks it corrupt
    }
    ExpectError(Qcow2Image::Open(p, {}).status(), "marked corrupt");
    {
      auto q = Qcow2Image::Open(p, {.repair_corrupt = true});
      REQUIRE(q.ok());
      char b[512] = {1};
      ExpectError((*q)->Write(0, b, sizeof b), "corrupt");  // only the check may write
      auto r = (*q)->Check(RepairMode::kAll);
      REQUIRE(r.ok());
      REQUIRE(r->corruptions >= 1);
      REQUIRE(r->corruptions_fixed == r->corruptions);
      REQUIRE(r->leaks_fixed == r->leaks);  // the cluster it used to name
    }
    auto q = Qcow2Image::Open(p, {});  // no longer refused
    REQUIRE(q.ok());
    std::vector<uint8_t> c1(65536), c2(65536);
    REQUIRE((*q)->Read(65536, c1.data(), c1.size()).ok());
    REQUIRE(std::all_of(c1.begin(), c1.end(), [](uint8_t b) { return b == 0; }));
    REQUIRE((*q)->Read(131072, c2.data(), c2.size()).ok());
    REQUIRE(std::all_of(c2.begin(), c2.end(), [](uint8_t b) { return b == 0x42; }));
    char b[512] = {7};
    REQUIRE((*q)->Write(65536, b, sizeof b).ok());
  }

  SECTION("an L2 table past EOF is dropped") {
    auto m = v;
    StoreBe64(&m[l1], (1ULL << 63) | (1ULL << 44));
    Spit(p, m);
    {
      auto q = Qcow2Image::Open(p, {});
      REQUIRE(q.ok());
      auto r = (*q)->Check(RepairMode::kAll);
      REQUIRE(r.ok());
      REQUIRE(r->corruptions == 1);
      REQUIRE(r->corruptions_fixed == 1);
      REQUIRE(r->leaks >= 2);  // the old L2 table and its data clusters
      REQUIRE(r->leaks_fixed == r->leaks);
      auto again = (*q)->Check(RepairMode::kNone);
      REQUIRE(again.ok());
      REQUIRE(again->corruptions + again->leaks + again->check_errors == 0);
    }
    auto q = Qcow2Image::Open(p, {.read_only = true});
    REQUIRE(q.ok());
    std::vector<uint8_t> all((*q)->size());
    REQUIRE((*q)->Read(0, all.data(), all.size()).ok());
    REQUIRE(std::all_of(all.begin(), all.end(), [](uint8_t b) { return b == 0; }));
  }
  if (kindling_test::Installed(block_test::HaveQemuImg(), "qemu-img", "qemu-img cross-check")) {
    auto check = block_test::Run("qemu-img check " + p);
    INFO(check.output);
    REQUIRE(check.exit_code == 0);
  }
}
