// QED against qemu-img: ours pass `qemu-img check` and compare equal to the
// expected content; qemu-img's (and qemu-io's, with backing files) read back
// bit-exact.
#include "block/qed.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <random>

#include "block/qcow2.h"
#include "kindling/test_skip.h"
#include "libs/block/src/test_util.h"

using namespace block;
using block_test::WriteFile;
using block_test::ReadAll;
using block_test::HaveQemuImg;
using block_test::Pattern;
using block_test::Run;
using block_test::TempDir;

TEST_CASE("QED create/write/read, with and without a backing file") {
  TempDir dir;
  const uint64_t size = 6 << 20;
  auto base = Pattern(size, 3);
  WriteFile(dir.Path("base.raw"), base);
  for (bool backed : {false, true}) {
    INFO("backed " << backed);
    const std::string path = dir.Path("d.qed");
    REQUIRE(QedImage::Create(path, {.size = size, .cluster_size = 4096,
                                    .backing_file = backed ? "base.raw" : "",
                                    .backing_format = backed ? "raw" : ""}).ok());
    std::vector<uint8_t> model = backed ? base : std::vector<uint8_t>(size, 0);
    {
      auto q = OpenImage(path, {});
      REQUIRE(q.ok());
      REQUIRE((*q)->format() == "qed");
      std::mt19937_64 rng(backed);
      for (int i = 0; i < 150; ++i) {
        uint64_t len = 1 + rng() % 50000;
        uint64_t off = rng() % (size - len);
        if (i % 6 == 0) {
          REQUIRE((*q)->WriteZeroes(off, len).ok());
          memset(&model[off], 0, len);
        } else {
          auto d = Pattern(len, rng());
          REQUIRE((*q)->Write(off, d.data(), len).ok());
          memcpy(&model[off], d.data(), len);
        }
      }
      REQUIRE((ReadAll(**q) == model));
    }
    auto q = OpenImage(path, {.read_only = true});
    REQUIRE(q.ok());
    REQUIRE((ReadAll(**q) == model));
    if (kindling_test::Installed(HaveQemuImg(), "qemu-img", "qemu-img cross-check")) {
      auto c = Run("qemu-img check " + path);
      INFO(c.output);
      REQUIRE(c.exit_code == 0);
      WriteFile(dir.Path("model.raw"), model);
      auto m = Run("qemu-img compare -F qed " + dir.Path("model.raw") + " " + path);
      INFO(m.output);
      REQUIRE(m.exit_code == 0);
    }
  }
}

TEST_CASE("QED images made by qemu-img and qemu-io read back bit-exact") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");
  TempDir dir;
  const uint64_t size = 4 << 20;
  std::vector<uint8_t> raw(size, 0);
  auto p = Pattern(size, 6);
  memcpy(raw.data(), p.data(), 1 << 20);
  WriteFile(dir.Path("src.raw"), raw);
  REQUIRE(Run("qemu-img convert -O qed " + dir.Path("src.raw") + " " + dir.Path("c.qed")).exit_code == 0);
  auto c = OpenImage(dir.Path("c.qed"), {.read_only = true});
  REQUIRE(c.ok());
  REQUIRE((ReadAll(**c) == raw));
  // qcow2 base <- qed overlay written by qemu-io.
  REQUIRE(Qcow2Image::Create(dir.Path("base.qcow2"), {.size = size}).ok());
  {
    auto b = Qcow2Image::Open(dir.Path("base.qcow2"), {});
    REQUIRE(b.ok());
    REQUIRE((*b)->Write(0, raw.data(), size).ok());
  }
  REQUIRE(Run("qemu-img create -f qed -b base.qcow2 -F qcow2 " + dir.Path("o.qed")).exit_code == 0);
  REQUIRE(Run("qemu-io -c 'write -P 0x77 100k 300k' " + dir.Path("o.qed")).exit_code == 0);
  std::vector<uint8_t> want = raw;
  memset(&want[100 << 10], 0x77, 300 << 10);
  auto o = OpenImage(dir.Path("o.qed"), {.read_only = true});
  INFO(o.status().ToString());
  REQUIRE(o.ok());
  REQUIRE((ReadAll(**o) == want));
}

TEST_CASE("hostile QED headers are clear errors; need-check repairs") {
  TempDir dir;
  const std::string path = dir.Path("h.qed");
  REQUIRE(QedImage::Create(path, {.size = 1 << 20, .cluster_size = 4096}).ok());
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> good((std::istreambuf_iterator<char>(in)), {});
  auto open = [&](std::vector<uint8_t> img, bool ro = true) {
    WriteFile(path, img);
    return OpenImage(path, {.read_only = ro, .format = "qed"}).status();
  };
  struct P {
    int off;
    uint32_t v;
    const char* needle;
  } ps[] = {{4, 1000, "cluster_size"}, {8, 3, "table_size"}, {12, 0, "header_size"},
            {40, 0x7fff000, "l1_table_offset"}, {48, 4097, "image_size"}};
  for (const P& p : ps) {
    auto m = good;
    memcpy(&m[p.off], &p.v, 4);
    if (p.off == 40 || p.off == 48) memset(&m[p.off + 4], 0, 4);
    absl::Status s = open(m);
    INFO(s.ToString());
    REQUIRE_FALSE(s.ok());
    REQUIRE(s.message().find(p.needle) != std::string::npos);
  }
  REQUIRE_FALSE(open({good.begin(), good.begin() + 20}).ok());
  // An L1 entry past EOF with need-check set: a read-write open repairs it.
  auto m = good;
  uint64_t far = 1ULL << 40;
  memcpy(&m[4096], &far, 8);
  m[16] |= 2;
  REQUIRE(open(m, false).ok());
  auto q = QedImage::OpenInChain(path, {.read_only = true}, nullptr);
  REQUIRE(q.ok());
  auto r = (*q)->Check(false);
  REQUIRE(r.ok());
  REQUIRE(r->corruptions == 0);
}
