// qcow2 against QEMU: images we write pass `qemu-img check` and compare
// equal to the expected raw content; images qemu-img makes read back exact.
#include "block/qcow2.h"

#include <catch2/catch.hpp>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <condition_variable>
#include <mutex>
#include <random>

#include "block/backend.h"
#include "block/raw.h"
#include "kindling/test_skip.h"
#include "libs/block/src/test_util.h"

using namespace block;
using block_test::WriteFile;
using block_test::ReadAll;
using block_test::HaveQemuImg;
using block_test::Pattern;
using block_test::Run;
using block_test::TempDir;

namespace {

// Random writes, zeroes and discards on `img`, mirrored in `model`.
void RandomOps(Image& img, std::vector<uint8_t>& model, uint64_t seed, int ops,
               uint64_t max_len) {
  std::mt19937_64 rng(seed);
  const uint64_t size = model.size();
  for (int i = 0; i < ops; ++i) {
    uint64_t len = 1 + rng() % max_len;
    if (rng() % 2) len = (len + 511) & ~511ULL;
    len = std::min(len, size);
    uint64_t off = rng() % (size - len + 1);
    if (rng() % 3 == 0) off &= ~511ULL;
    int what = rng() % 10;
    if (what < 7) {
      auto data = Pattern(len, rng());
      INFO("write " << off << "+" << len);
      REQUIRE(img.Write(off, data.data(), len).ok());
      memcpy(&model[off], data.data(), len);
    } else if (what < 9) {
      INFO("zero " << off << "+" << len);
      REQUIRE(img.WriteZeroes(off, len).ok());
      memset(&model[off], 0, len);
    } else {
      // Discard may leave data or zeros; follow it with a read to learn
      // which, per cluster, then keep the model in step.
      REQUIRE(img.Discard(off, len).ok());
      std::vector<uint8_t> back(len);
      REQUIRE(img.Read(off, back.data(), len).ok());
      bool ok = true;
      for (uint64_t j = 0; j < len; ++j) {
        ok &= back[j] == model[off + j] || back[j] == 0;
      }
      REQUIRE(ok);
      memcpy(&model[off], back.data(), len);
    }
    if (rng() % 16 == 0) REQUIRE(img.Flush().ok());
  }
}

void QemuCheckAndCompare(const std::string& image, const std::string& raw) {
  auto check = Run("qemu-img check " + image);
  INFO(check.output);
  REQUIRE(check.exit_code == 0);
  auto cmp = Run("qemu-img compare -f raw -F qcow2 " + raw + " " + image);
  INFO(cmp.output);
  REQUIRE(cmp.exit_code == 0);
}

}  // namespace

TEST_CASE("qcow2 create/write/read round trip at every cluster size") {
  TempDir dir;
  for (uint64_t cs : {512ULL, 4096ULL, 65536ULL, 2ULL << 20}) {
    for (uint32_t bits : {16u, 1u, 64u}) {
      if (cs == (2ULL << 20) && bits != 16) continue;
      DYNAMIC_SECTION("cluster " << cs << " refcount bits " << bits) {
        const std::string path = dir.Path("t.qcow2");
        const uint64_t size = cs >= (1 << 20) ? (24ULL << 20) : (6ULL << 20) + 1234 * 512;
        REQUIRE(Qcow2Image::Create(path, {.size = size, .cluster_size = cs,
                                          .refcount_bits = bits}).ok());
        std::vector<uint8_t> model(size, 0);
        {
          auto img = Qcow2Image::Open(path, {});
          REQUIRE(img.ok());
          RandomOps(**img, model, cs + bits, 300, 3 * cs + 777);
          REQUIRE((ReadAll(**img) == model));
          REQUIRE((*img)->Flush().ok());
          auto r = (*img)->Check(RepairMode::kNone);
          REQUIRE(r.ok());
          INFO((r->messages.empty() ? "" : r->messages[0]));
          REQUIRE(r->corruptions == 0);
          REQUIRE(r->leaks == 0);
        }
        auto img = Qcow2Image::Open(path, {.read_only = true});
        REQUIRE(img.ok());
        REQUIRE((ReadAll(**img) == model));
        if (kindling_test::Installed(HaveQemuImg(), "qemu-img", "qemu-img cross-check")) {
          WriteFile(dir.Path("model.raw"), model);
          QemuCheckAndCompare(path, dir.Path("model.raw"));
        }
      }
    }
  }
}

TEST_CASE("qcow2 refcount table grows when the image outgrows it") {
  TempDir dir;
  const std::string path = dir.Path("grow.qcow2");
  // 512-byte clusters, 16-bit refcounts: one table cluster covers 8 MiB.
  REQUIRE(Qcow2Image::Create(path, {.size = 64 << 20, .cluster_size = 512}).ok());
  std::vector<uint8_t> model(64 << 20, 0);
  {
    auto img = Qcow2Image::Open(path, {});
    REQUIRE(img.ok());
    auto data = Pattern(24 << 20, 5);
    REQUIRE((*img)->Write(8 << 20, data.data(), data.size()).ok());
    memcpy(&model[8 << 20], data.data(), data.size());
    REQUIRE((*img)->Flush().ok());
    REQUIRE((ReadAll(**img) == model));
  }
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");
  WriteFile(dir.Path("model.raw"), model);
  QemuCheckAndCompare(path, dir.Path("model.raw"));
}

TEST_CASE("qcow2 images made by qemu-img read back bit-exact") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");
  TempDir dir;
  const uint64_t size = 8 << 20;
  // Half random, half compressible, with holes.
  std::vector<uint8_t> raw(size, 0);
  auto rnd = Pattern(size, 9);
  for (uint64_t off = 0; off < size; off += 256 << 10) {
    if ((off >> 18) % 3 == 0) memcpy(&raw[off], &rnd[off], 128 << 10);
    if ((off >> 18) % 3 == 1) memset(&raw[off], 'k', 100 << 10);
  }
  WriteFile(dir.Path("src.raw"), raw);
  struct Case {
    const char* opts;
  } cases[] = {{"-o cluster_size=512"},
               {"-o cluster_size=4096"},
               {"-o cluster_size=65536"},
               {"-o cluster_size=2M"},
               {"-c -o cluster_size=65536"},
               {"-c -o cluster_size=4096,compression_type=zstd"},
               {"-c -o cluster_size=65536,compression_type=zstd"},
               {"-o compat=0.10"},
               {"-o refcount_bits=1"}};
  for (const Case& c : cases) {
    INFO(c.opts);
    const std::string img = dir.Path("q.qcow2");
    auto r = Run(std::string("qemu-img convert -f raw -O qcow2 ") + c.opts + " " +
                 dir.Path("src.raw") + " " + img);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto q = Qcow2Image::Open(img, {.read_only = true});
    INFO(q.status().ToString());
    REQUIRE(q.ok());
    REQUIRE((ReadAll(**q) == raw));
    auto chk = (*q)->Check(RepairMode::kNone);
    REQUIRE(chk.ok());
    REQUIRE(chk->corruptions == 0);
    REQUIRE(chk->leaks == 0);
  }
}

TEST_CASE("qcow2 writes over compressed clusters and v2 images stay valid") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");
  TempDir dir;
  const uint64_t size = 4 << 20;
  auto raw = Pattern(size, 11);
  for (uint64_t i = 0; i < size; i += 3) raw[i] = 0;  // compressible-ish
  WriteFile(dir.Path("src.raw"), raw);
  for (const char* opts : {"-c", "-c -o compression_type=zstd", "-o compat=0.10"}) {
    INFO(opts);
    const std::string img = dir.Path("c.qcow2");
    REQUIRE(Run(std::string("qemu-img convert -f raw -O qcow2 ") + opts + " " +
                dir.Path("src.raw") + " " + img).exit_code == 0);
    std::vector<uint8_t> model = raw;
    {
      auto q = Qcow2Image::Open(img, {});
      REQUIRE(q.ok());
      RandomOps(**q, model, 77, 200, 100000);
      REQUIRE((ReadAll(**q) == model));
    }
    WriteFile(dir.Path("model.raw"), model);
    QemuCheckAndCompare(img, dir.Path("model.raw"));
  }
}

TEST_CASE("qcow2 backing chains: qemu-made and kindling-made overlays") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");
  TempDir dir;
  const uint64_t size = 4 << 20;
  auto base = Pattern(size, 21);
  WriteFile(dir.Path("base.raw"), base);
  // base.raw <- mid.qcow2 (qemu, written by qemu-io) <- top.qcow2 (kindling)
  REQUIRE(Run("qemu-img create -f qcow2 -b base.raw -F raw " + dir.Path("mid.qcow2")).exit_code == 0);
  REQUIRE(Run("qemu-io -c 'write -P 0x5a 1M 512k' -c 'write -z 2M 64k' " +
              dir.Path("mid.qcow2")).exit_code == 0);
  std::vector<uint8_t> model = base;
  memset(&model[1 << 20], 0x5a, 512 << 10);
  memset(&model[2 << 20], 0, 64 << 10);
  {
    auto mid = OpenImage(dir.Path("mid.qcow2"), {.read_only = true});
    REQUIRE(mid.ok());
    REQUIRE((ReadAll(**mid) == model));
  }
  REQUIRE(Qcow2Image::Create(dir.Path("top.qcow2"),
                             {.size = size, .cluster_size = 4096,
                              .backing_file = "mid.qcow2",
                              .backing_format = "qcow2"}).ok());
  {
    auto top = OpenImage(dir.Path("top.qcow2"), {});
    REQUIRE(top.ok());
    REQUIRE((*top)->capabilities().backing);
    RandomOps(**top, model, 5, 300, 20000);
    REQUIRE((ReadAll(**top) == model));
  }
  WriteFile(dir.Path("model.raw"), model);
  QemuCheckAndCompare(dir.Path("top.qcow2"), dir.Path("model.raw"));
  // The chain as QEMU sees it.
  auto info = Run("qemu-img info --backing-chain " + dir.Path("top.qcow2"));
  REQUIRE(info.output.find("base.raw") != std::string::npos);
}

TEST_CASE("qcow2 backing loops and missing backing files are clear errors") {
  TempDir dir;
  REQUIRE(Qcow2Image::Create(dir.Path("a.qcow2"), {.size = 1 << 20, .backing_file = "b.qcow2"}).ok());
  REQUIRE(Qcow2Image::Create(dir.Path("b.qcow2"), {.size = 1 << 20, .backing_file = "a.qcow2"}).ok());
  auto a = OpenImage(dir.Path("a.qcow2"), {.read_only = true});
  REQUIRE_FALSE(a.ok());
  INFO(a.status().ToString());
  REQUIRE(a.status().message().find("loop") != std::string::npos);
  REQUIRE(Qcow2Image::Create(dir.Path("self.qcow2"), {.size = 1 << 20, .backing_file = "self.qcow2"}).ok());
  REQUIRE_FALSE(OpenImage(dir.Path("self.qcow2"), {}).ok());
  REQUIRE(Qcow2Image::Create(dir.Path("orphan.qcow2"), {.size = 1 << 20, .backing_file = "gone.raw"}).ok());
  auto o = OpenImage(dir.Path("orphan.qcow2"), {});
  REQUIRE_FALSE(o.ok());
  REQUIRE(o.status().message().find("gone.raw") != std::string::npos);
}

TEST_CASE("qcow2 resize grows the disk and the L1 table") {
  TempDir dir;
  const std::string path = dir.Path("r.qcow2");
  REQUIRE(Qcow2Image::Create(path, {.size = 1 << 20, .cluster_size = 512}).ok());
  auto data = Pattern(1 << 20, 3);
  {
    auto q = Qcow2Image::Open(path, {});
    REQUIRE(q.ok());
    REQUIRE((*q)->Write(0, data.data(), data.size()).ok());
    REQUIRE((*q)->Resize(64 << 20).ok());
    REQUIRE((*q)->size() == (64u << 20));
    REQUIRE((*q)->Write(60 << 20, data.data(), 4096).ok());
  }
  auto q = Qcow2Image::Open(path, {.read_only = true});
  REQUIRE(q.ok());
  std::vector<uint8_t> back(1 << 20);
  REQUIRE((*q)->Read(0, back.data(), back.size()).ok());
  REQUIRE((back == data));
  REQUIRE((*q)->Read(60 << 20, back.data(), 4096).ok());
  REQUIRE(memcmp(back.data(), data.data(), 4096) == 0);
  if (kindling_test::Installed(HaveQemuImg(), "qemu-img", "qemu-img cross-check")) REQUIRE(Run("qemu-img check " + path).exit_code == 0);
}

TEST_CASE("qcow2 shrink frees the clusters past the new end, keeps the rest") {
  TempDir dir;
  const std::string path = dir.Path("s.qcow2");
  REQUIRE(Qcow2Image::Create(path, {.size = 8 << 20, .cluster_size = 4096}).ok());
  auto data = Pattern(8 << 20, 5);
  uint64_t before = 0;
  {
    auto q = Qcow2Image::Open(path, {});
    REQUIRE(q.ok());
    REQUIRE((*q)->Write(0, data.data(), data.size()).ok());
    REQUIRE((*q)->Flush().ok());
    before = std::filesystem::file_size(path);
    // Not on a cluster boundary: the cluster holding the new end stays.
    REQUIRE((*q)->Resize((3 << 20) + 512).ok());
    REQUIRE((*q)->size() == (3u << 20) + 512);
    std::vector<uint8_t> past(512);
    REQUIRE_FALSE((*q)->Read(3 << 20, past.data(), 1024).ok());  // beyond the end
  }
  {
    auto q = Qcow2Image::Open(path, {});
    REQUIRE(q.ok());
    REQUIRE((*q)->size() == (3u << 20) + 512);
    std::vector<uint8_t> back((3 << 20) + 512);
    REQUIRE((*q)->Read(0, back.data(), back.size()).ok());
    REQUIRE(std::equal(back.begin(), back.end(), data.begin()));
    // Growing again shows zeros, not the old data.
    REQUIRE((*q)->Resize(8 << 20).ok());
    std::vector<uint8_t> tail(4 << 20);
    REQUIRE((*q)->Read(4 << 20, tail.data(), tail.size()).ok());
    REQUIRE(std::all_of(tail.begin(), tail.end(), [](uint8_t b) { return b == 0; }));
  }
  if (kindling_test::Installed(HaveQemuImg(), "qemu-img", "qemu-img cross-check")) {
    auto check = Run("qemu-img check " + path);
    INFO(check.output);
    REQUIRE(check.exit_code == 0);  // no leaks: the freed clusters are free
    auto info = Run("qemu-img info --output json " + path);
    REQUIRE(info.output.find("\"virtual-size\": 8388608") != std::string::npos);
  }
  // The freed clusters are reused: rewriting the tail does not grow the file.
  {
    auto q = Qcow2Image::Open(path, {});
    REQUIRE(q.ok());
    REQUIRE((*q)->Write(4 << 20, data.data(), 4 << 20).ok());
    REQUIRE((*q)->Flush().ok());
  }
  REQUIRE(std::filesystem::file_size(path) <= before);
}

TEST_CASE("qcow2 shrink refuses an image with internal snapshots") {
  TempDir dir;
  const std::string path = dir.Path("snap.qcow2");
  REQUIRE(Qcow2Image::Create(path, {.size = 4 << 20}).ok());
  auto q = Qcow2Image::Open(path, {});
  REQUIRE(q.ok());
  REQUIRE((*q)->CreateSnapshot("s1").ok());
  auto s = (*q)->Resize(1 << 20);
  REQUIRE_FALSE(s.ok());
  REQUIRE(s.message().find("internal snapshots") != std::string::npos);
}

TEST_CASE("qcow2 concurrent writers and readers through the thread pool") {
  TempDir dir;
  const std::string path = dir.Path("c.qcow2");
  const uint64_t size = 16 << 20;
  REQUIRE(Qcow2Image::Create(path, {.size = size, .cluster_size = 65536}).ok());
  std::vector<uint8_t> model(size, 0);
  {
    BackendOptions bo;
    bo.threads = 8;
    auto b = OpenBackend(path, bo);
    REQUIRE(b.ok());
    std::mutex mu;
    std::condition_variable cv;
    int inflight = 0, failed = 0;
    std::mt19937_64 rng(1);
    std::vector<std::vector<uint8_t>> bufs;
    // Disjoint 4 KiB slots, several per cluster, in random order.
    std::vector<uint64_t> slots(size / 4096 / 2);
    for (uint64_t i = 0; i < slots.size(); ++i) slots[i] = i * 2;
    std::shuffle(slots.begin(), slots.end(), rng);
    bufs.reserve(slots.size());
    for (uint64_t s : slots) {
      bufs.push_back(Pattern(4096, s));
      memcpy(&model[s * 4096], bufs.back().data(), 4096);
      {
        std::lock_guard<std::mutex> l(mu);
        ++inflight;
      }
      (*b)->Submit(Request::Write(s * 4096, bufs.back().data(), 4096),
                   [&](absl::Status st) {
                     std::lock_guard<std::mutex> l(mu);
                     if (!st.ok()) ++failed;
                     --inflight;
                     cv.notify_all();
                   });
    }
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return inflight == 0; });
    REQUIRE(failed == 0);
    SyncBackend sync(**b);
    REQUIRE(sync.Flush().ok());
  }
  auto q = Qcow2Image::Open(path, {.read_only = true});
  REQUIRE(q.ok());
  REQUIRE((ReadAll(**q) == model));
  if (kindling_test::Installed(HaveQemuImg(), "qemu-img", "qemu-img cross-check")) {
    WriteFile(dir.Path("model.raw"), model);
    QemuCheckAndCompare(path, dir.Path("model.raw"));
  }
}
