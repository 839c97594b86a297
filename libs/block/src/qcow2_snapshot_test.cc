// qcow2 internal snapshots against qemu-img: ours are listed and applied by
// qemu-img, qemu-img's read back through us; check stays clean throughout.
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>

#include "block/qcow2.h"
#include "kindling/test_skip.h"
#include "libs/block/src/test_util.h"

using namespace block;
using block_test::ReadAll;
using block_test::HaveQemuImg;
using block_test::Pattern;
using block_test::Run;
using block_test::TempDir;

namespace {

void CleanCheck(Qcow2Image& q) {
  auto r = q.Check(RepairMode::kNone);
  REQUIRE(r.ok());
  INFO((r->messages.empty() ? "" : r->messages[0]));
  REQUIRE(r->corruptions == 0);
  REQUIRE(r->leaks == 0);
}

void QemuClean(const std::string& path) {
  if (!kindling_test::Installed(HaveQemuImg(), "qemu-img", "qemu-img check")) return;
  auto c = Run("qemu-img check " + path);
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
}

}  // namespace

TEST_CASE("qcow2 snapshots: create, write, apply, delete") {
  TempDir dir;
  const std::string path = dir.Path("s.qcow2");
  const uint64_t size = 4 << 20;
  REQUIRE(Qcow2Image::Create(path, {.size = size, .cluster_size = 4096}).ok());
  auto v1 = Pattern(size, 1);
  std::vector<uint8_t> v2;
  {
    auto q = Qcow2Image::Open(path, {});
    REQUIRE(q.ok());
    REQUIRE((*q)->Write(0, v1.data(), size / 2).ok());
    std::memset(&v1[size / 2], 0, size / 2);
    REQUIRE((*q)->CreateSnapshot("one").ok());
    REQUIRE(absl::IsAlreadyExists((*q)->CreateSnapshot("one")));
    CleanCheck(**q);
    auto p = Pattern(size / 2, 2);
    REQUIRE((*q)->Write(size / 4, p.data(), p.size()).ok());
    v2 = v1;
    memcpy(&v2[size / 4], p.data(), p.size());
    REQUIRE((ReadAll(**q) == v2));
    REQUIRE((*q)->CreateSnapshot("two").ok());
    REQUIRE((*q)->WriteZeroes(0, size).ok());
    CleanCheck(**q);
    REQUIRE((*q)->ApplySnapshot("one").ok());
    REQUIRE((ReadAll(**q) == v1));
    CleanCheck(**q);
    REQUIRE((*q)->ApplySnapshot("2").ok());  // by id
    REQUIRE((ReadAll(**q) == v2));
    auto list = (*q)->ListSnapshots();
    REQUIRE(list.ok());
    REQUIRE(list->size() == 2);
    REQUIRE((*list)[0].name == "one");
    REQUIRE((*list)[1].id == "2");
  }
  QemuClean(path);
  if (!kindling_test::Installed(HaveQemuImg(), "qemu-img", "apply by qemu-img")) {
    // the same state as QEMU's apply below leaves
    auto q = Qcow2Image::Open(path, {});
    REQUIRE(q.ok());
    REQUIRE((*q)->ApplySnapshot("one").ok());
  } else {
    auto l = Run("qemu-img snapshot -l " + path);
    REQUIRE(l.output.find("one") != std::string::npos);
    REQUIRE(l.output.find("two") != std::string::npos);
    // QEMU applies our snapshot and sees the same bytes.
    REQUIRE(Run("qemu-img snapshot -a one " + path).exit_code == 0);
    auto q = Qcow2Image::Open(path, {.read_only = true});
    REQUIRE(q.ok());
    REQUIRE((ReadAll(**q) == v1));
  }
  {
    auto q = Qcow2Image::Open(path, {});
    REQUIRE(q.ok());
    REQUIRE((*q)->DeleteSnapshot("one").ok());
    REQUIRE((*q)->DeleteSnapshot("two").ok());
    REQUIRE(absl::IsNotFound((*q)->DeleteSnapshot("two")));
    REQUIRE((ReadAll(**q) == v1));
    CleanCheck(**q);
  }
  QemuClean(path);
}

TEST_CASE("qcow2 snapshots made by qemu-img apply through kindling") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");
  TempDir dir;
  const std::string path = dir.Path("q.qcow2");
  REQUIRE(Run("qemu-img create -f qcow2 " + path + " 2M").exit_code == 0);
  REQUIRE(Run("qemu-io -c 'write -P 0x11 0 1M' " + path).exit_code == 0);
  REQUIRE(Run("qemu-img snapshot -c first " + path).exit_code == 0);
  REQUIRE(Run("qemu-io -c 'write -P 0x22 512k 1M' " + path).exit_code == 0);
  auto q = Qcow2Image::Open(path, {});
  REQUIRE(q.ok());
  std::vector<uint8_t> now(2 << 20, 0);
  memset(now.data(), 0x11, 512 << 10);
  memset(&now[512 << 10], 0x22, 1 << 20);
  REQUIRE((ReadAll(**q) == now));
  REQUIRE((*q)->ApplySnapshot("first").ok());
  std::vector<uint8_t> then(2 << 20, 0);
  memset(then.data(), 0x11, 1 << 20);
  REQUIRE((ReadAll(**q) == then));
  q->reset();
  QemuClean(path);
}

TEST_CASE("snapshots with 1-bit refcounts overflow cleanly") {
  TempDir dir;
  const std::string path = dir.Path("r1.qcow2");
  REQUIRE(Qcow2Image::Create(path, {.size = 1 << 20, .refcount_bits = 1}).ok());
  auto q = Qcow2Image::Open(path, {});
  REQUIRE(q.ok());
  char b[512] = {1};
  REQUIRE((*q)->Write(0, b, sizeof b).ok());
  absl::Status s = (*q)->CreateSnapshot("x");
  INFO(s.ToString());
  REQUIRE(absl::IsResourceExhausted(s));
  REQUIRE(s.message().find("overflow") != std::string::npos);
}
