// kindling-img end to end, cross-checked with qemu-img where it is present.
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>

#include "kindling/test_skip.h"
#include "libs/block/src/test_util.h"

using block_test::HaveQemuImg;
using block_test::Pattern;
using block_test::Run;
using block_test::TempDir;

namespace {

const std::string kTool = "libs/block/kindling-img";

block_test::CommandResult K(const std::string& args) { return Run(kTool + " " + args); }

void WriteFile(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data.data()), data.size());
}

}  // namespace

TEST_CASE("kindling-img create, info, convert, compare") {
  TempDir d;
  auto c = K("create -f qcow2 -o cluster_size=4096 " + d.Path("a.qcow2") + " 8M");
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  auto info = K("info --output json " + d.Path("a.qcow2"));
  REQUIRE(info.exit_code == 0);
  REQUIRE(info.output.find("\"virtual-size\": 8388608") != std::string::npos);
  REQUIRE(info.output.find("\"cluster-size\": 4096") != std::string::npos);
  REQUIRE(K("info " + d.Path("a.qcow2")).output.find("file format: qcow2") != std::string::npos);

  std::vector<uint8_t> raw(8 << 20, 0);
  auto p = Pattern(3 << 20, 1);
  memcpy(&raw[1 << 20], p.data(), p.size());
  WriteFile(d.Path("src.raw"), raw);
  for (const char* fmt : {"qcow2", "vpc", "qed", "raw"}) {
    INFO(fmt);
    const std::string out = d.Path(std::string("out.") + fmt);
    auto cv = K(std::string("convert -p -f raw -O ") + fmt + " " + d.Path("src.raw") + " " + out);
    INFO(cv.output);
    REQUIRE(cv.exit_code == 0);
    REQUIRE(cv.output.find("100.00/100%") != std::string::npos);
    REQUIRE(K("compare " + d.Path("src.raw") + " " + out).exit_code == 0);
    if (HaveQemuImg()) {
      auto q = Run(std::string("qemu-img compare -f raw -F ") + fmt + " " + d.Path("src.raw") + " " + out);
      INFO(q.output);
      REQUIRE(q.exit_code == 0);
    }
  }
  // A one-byte difference is found, with its offset.
  raw[5 << 20] ^= 1;
  WriteFile(d.Path("changed.raw"), raw);
  auto cmp = K("compare " + d.Path("changed.raw") + " " + d.Path("out.qcow2"));
  REQUIRE(cmp.exit_code == 1);
  REQUIRE(cmp.output.find("Content mismatch at offset 5242880") != std::string::npos);
  // qcow2 overlay on the converted image (any base format).
  REQUIRE(K("create -f qcow2 -b out.vpc -F vpc " + d.Path("top.qcow2")).exit_code == 0);
  raw[5 << 20] ^= 1;
  REQUIRE(K("compare " + d.Path("src.raw") + " " + d.Path("top.qcow2")).exit_code == 0);
}

TEST_CASE("kindling-img check finds and repairs leaks; resize; errors") {
  TempDir d;
  const std::string img = d.Path("l.qcow2");
  REQUIRE(K("create -f qcow2 -o cluster_size=4096 " + img + " 4M").exit_code == 0);
  REQUIRE(K("check " + img).exit_code == 0);
  // Layout: header, refcount table, L1, refcount block. Give cluster 4 a
  // refcount nothing references: a leak.
  {
    std::fstream f(img, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(3 * 4096 + 4 * 2);
    const char one[2] = {0, 1};
    f.write(one, 2);
    f.seekp(5 * 4096 - 1);
    f.write("", 1);
  }
  auto leak = K("check " + img);
  INFO(leak.output);
  REQUIRE(leak.exit_code == 3);
  REQUIRE(leak.output.find("1 leaked clusters") != std::string::npos);
  if (HaveQemuImg()) REQUIRE(Run("qemu-img check " + img).exit_code == 3);
  auto fix = K("check -r leaks " + img);
  INFO(fix.output);
  REQUIRE(fix.exit_code == 0);
  if (HaveQemuImg()) REQUIRE(Run("qemu-img check " + img).exit_code == 0);

  REQUIRE(K("resize " + img + " +4M").exit_code == 0);
  REQUIRE(K("info --output json " + img).output.find("\"virtual-size\": 8388608") != std::string::npos);
  auto unasked = K("resize " + img + " -1M");  // shrinking must be asked for
  REQUIRE(unasked.exit_code != 0);
  REQUIRE(unasked.output.find("--shrink") != std::string::npos);
  REQUIRE(K("resize --shrink " + img + " -1M").exit_code == 0);
  REQUIRE(K("info --output json " + img).output.find("\"virtual-size\": 7340032") != std::string::npos);
  if (HaveQemuImg()) REQUIRE(Run("qemu-img check " + img).exit_code == 0);

  // An image marked corrupt (incompatible feature bit 1): writes refused
  // until `check -r all` has found it consistent and cleared the mark.
  {
    std::fstream f(img, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(72 + 7);
    const char corrupt = 2;
    f.write(&corrupt, 1);
  }
  auto refused = K("bench -w -c 10 " + img);
  REQUIRE(refused.exit_code != 0);
  REQUIRE(refused.output.find("marked corrupt") != std::string::npos);
  auto repaired = K("check -r all " + img);
  INFO(repaired.output);
  REQUIRE(repaired.exit_code == 0);
  REQUIRE(K("bench -w -c 10 " + img).exit_code == 0);
  if (HaveQemuImg()) REQUIRE(Run("qemu-img check " + img).exit_code == 0);

  auto missing = K("info " + d.Path("nope.qcow2"));
  REQUIRE(missing.exit_code == 1);
  REQUIRE(missing.output.find("nope.qcow2") != std::string::npos);
  auto badcs = K("create -f qcow2 -o cluster_size=1000 " + d.Path("x.qcow2") + " 1M");
  REQUIRE(badcs.exit_code == 1);
  REQUIRE(badcs.output.find("cluster size") != std::string::npos);
}

TEST_CASE("kindling-img snapshot and bench") {
  TempDir d;
  const std::string img = d.Path("s.qcow2");
  REQUIRE(K("create -f qcow2 " + img + " 16M").exit_code == 0);
  REQUIRE(K("bench -w -c 200 -s 64k " + img).exit_code == 0);
  REQUIRE(K("snapshot -c before " + img).exit_code == 0);
  auto b = K("bench -w -c 100 -d 4 -S 8k --pattern 7 --flush-interval 10 " + img);
  INFO(b.output);
  REQUIRE(b.exit_code == 0);
  REQUIRE(b.output.find("Run completed in") != std::string::npos);
  REQUIRE(K("snapshot -l " + img).output.find("before") != std::string::npos);
  if (HaveQemuImg()) {
    REQUIRE(Run("qemu-img snapshot -l " + img).output.find("before") != std::string::npos);
    REQUIRE(Run("qemu-img check " + img).exit_code == 0);
  }
  REQUIRE(K("snapshot -a before " + img).exit_code == 0);
  REQUIRE(K("snapshot -d before " + img).exit_code == 0);
  REQUIRE(K("snapshot -l " + img).output.find("before") == std::string::npos);
  REQUIRE(K("check " + img).exit_code == 0);
  auto rd = K("bench -c 500 " + img);
  REQUIRE(rd.exit_code == 0);
}

TEST_CASE("kindling-img check -r all repairs refcounts and COPIED flags") {
  TempDir d;
  const std::string img = d.Path("c.qcow2");
  REQUIRE(K("create -f qcow2 -o cluster_size=4096 " + img + " 4M").exit_code == 0);
  REQUIRE(K("bench -w -c 1 -s 4k " + img).exit_code == 0);  // L2 = cluster 4, data = 5
  {
    std::fstream f(img, std::ios::binary | std::ios::in | std::ios::out);
    const char zero[2] = {0, 0};
    f.seekp(3 * 4096 + 5 * 2);  // data cluster's refcount: 1 -> 0
    f.write(zero, 2);
    f.seekp(4 * 4096);          // L2 entry 0: clear COPIED (bit 63)
    f.write(zero, 1);
  }
  auto bad = K("check " + img);
  INFO(bad.output);
  REQUIRE(bad.exit_code == 2);
  REQUIRE(bad.output.find("ERROR cluster 5 refcount=0 reference=1") != std::string::npos);
  if (HaveQemuImg()) REQUIRE(Run("qemu-img check " + img).exit_code == 2);
  REQUIRE(K("check -r leaks " + img).exit_code == 2);  // leaks mode leaves errors
  auto fix = K("check -r all " + img);
  INFO(fix.output);
  REQUIRE(fix.exit_code == 0);
  REQUIRE(fix.output.find("Double checking the fixed image now") != std::string::npos);
  if (HaveQemuImg()) {
    auto q = Run("qemu-img check " + img);
    INFO(q.output);
    REQUIRE(q.exit_code == 0);
  }
}

TEST_CASE("kindling-img: a differencing VHD over a qemu-img parent; convert reads through it") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");
  TempDir d;
  std::vector<uint8_t> raw(4 << 20, 0);
  auto p = Pattern(2 << 20, 2);
  memcpy(&raw[1 << 20], p.data(), p.size());
  WriteFile(d.Path("src.raw"), raw);
  auto r = Run("qemu-img convert -O vpc -o subformat=dynamic,force_size=on " + d.Path("src.raw") +
               " " + d.Path("base.vhd"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto c = K("create -f vpc -b base.vhd -F vpc " + d.Path("child.vhd"));
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  REQUIRE(c.output.find("size=4194304") != std::string::npos);
  auto info = K("info " + d.Path("child.vhd"));
  INFO(info.output);
  REQUIRE(info.output.find("backing file: " + d.Path("base.vhd")) != std::string::npos);
  REQUIRE(K("info --output json " + d.Path("child.vhd")).output.find("\"backing-filename\"") !=
          std::string::npos);
  // The child shows the parent until written; convert flattens the chain.
  r = K("convert -O raw " + d.Path("child.vhd") + " " + d.Path("flat.raw"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  r = Run("qemu-img compare -f raw -F raw " + d.Path("flat.raw") + " " + d.Path("src.raw"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(K("compare " + d.Path("child.vhd") + " " + d.Path("src.raw")).exit_code == 0);
  // A parent that is not a VHD is refused by name.
  r = K("create -f vpc -b src.raw -F raw " + d.Path("bad.vhd"));
  REQUIRE(r.exit_code != 0);
  REQUIRE(r.output.find("-F vpc") != std::string::npos);
}
