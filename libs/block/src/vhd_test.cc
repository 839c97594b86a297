// VHD against qemu-img: our fixed and dynamic disks compare equal to the
// expected raw content under qemu-img; qemu-img's read back bit-exact.
#include "block/vhd.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <random>

#include "kindling/test_skip.h"
#include "libs/block/src/test_util.h"

using namespace block;
using block_test::WriteFile;
using block_test::ReadAll;
using block_test::HaveQemuImg;
using block_test::Pattern;
using block_test::Run;
using block_test::TempDir;

TEST_CASE("VHD fixed and dynamic: write, reopen, compare with qemu-img") {
  TempDir dir;
  for (bool fixed : {false, true}) {
    for (uint32_t bs : {2u << 20, 512u << 10}) {
      if (fixed && bs != (2u << 20)) continue;
      INFO("fixed " << fixed << " block " << bs);
      const std::string path = dir.Path("d.vhd");
      const uint64_t size = 9 << 20;
      REQUIRE(VhdImage::Create(path, {.size = size, .fixed = fixed, .block_size = bs}).ok());
      std::vector<uint8_t> model(size, 0);
      {
        auto v = OpenImage(path, {});
        REQUIRE(v.ok());
        REQUIRE((*v)->format() == "vpc");
        std::mt19937_64 rng(bs + fixed);
        for (int i = 0; i < 100; ++i) {
          uint64_t len = 1 + rng() % 300000;
          uint64_t off = rng() % (size - len);
          auto d = Pattern(len, rng());
          if (i % 7 == 0) {
            REQUIRE((*v)->WriteZeroes(off, len).ok());
            memset(&model[off], 0, len);
          } else {
            REQUIRE((*v)->Write(off, d.data(), len).ok());
            memcpy(&model[off], d.data(), len);
          }
        }
        REQUIRE((*v)->Flush().ok());
        REQUIRE((ReadAll(**v) == model));
      }
      auto v = VhdImage::Open(path, {.read_only = true});
      REQUIRE(v.ok());
      REQUIRE((*v)->fixed() == fixed);
      REQUIRE((ReadAll(**v) == model));
      if (kindling_test::Installed(HaveQemuImg(), "qemu-img", "qemu-img cross-check")) {
        WriteFile(dir.Path("model.raw"), model);
        auto c = Run("qemu-img compare -f raw -F vpc " + dir.Path("model.raw") + " " + path);
        INFO(c.output);
        REQUIRE(c.exit_code == 0);
      }
    }
  }
}

TEST_CASE("VHD images made by qemu-img read back bit-exact") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");
  TempDir dir;
  const uint64_t size = 6 << 20;
  std::vector<uint8_t> raw(size, 0);
  auto p = Pattern(size, 4);
  memcpy(raw.data(), p.data(), 1 << 20);
  memcpy(&raw[4 << 20], p.data(), 1 << 20);
  WriteFile(dir.Path("src.raw"), raw);
  for (const char* opts : {"-o subformat=dynamic", "-o subformat=fixed",
                           "-o subformat=dynamic,force_size=on"}) {
    INFO(opts);
    const std::string img = dir.Path("q.vhd");
    auto r = Run(std::string("qemu-img convert -f raw -O vpc ") + opts + " " +
                 dir.Path("src.raw") + " " + img);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto v = OpenImage(img, {.read_only = true});
    REQUIRE(v.ok());
    // QEMU may round the size to the CHS geometry: compare what both see.
    auto back = ReadAll(**v);
    auto info = Run("qemu-img info -f vpc --output json " + img);
    REQUIRE(info.output.find("\"virtual-size\": " + std::to_string((*v)->size())) !=
            std::string::npos);
    std::vector<uint8_t> want(back.size(), 0);
    memcpy(want.data(), raw.data(), std::min<uint64_t>(size, want.size()));
    REQUIRE((back == want));
  }
}

TEST_CASE("hostile VHD footers and headers are clear errors") {
  TempDir dir;
  const std::string path = dir.Path("h.vhd");
  REQUIRE(VhdImage::Create(path, {.size = 4 << 20}).ok());
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> good((std::istreambuf_iterator<char>(in)), {});
  auto try_open = [&](std::vector<uint8_t> img) {
    WriteFile(path, img);
    auto v = VhdImage::Open(path, {.read_only = true});
    if (!v.ok()) return v.status();
    std::vector<uint8_t> buf((*v)->size());
    return (*v)->Read(0, buf.data(), buf.size());
  };
  auto m = good;
  m[m.size() - 512 + 70] ^= 1;  // checksum mismatch (unique id byte)
  m[70] ^= 1;
  auto s = try_open(m);
  REQUIRE_FALSE(s.ok());
  REQUIRE(s.message().find("checksum") != std::string::npos);
  REQUIRE_FALSE(try_open({good.begin(), good.begin() + 100}).ok());
  // BAT entries pointing far past EOF read zeros, never crash.
  m = good;
  for (int i = 0; i < 8; ++i) m[1536 + i] = 0x7f;
  (void)try_open(m);
}
