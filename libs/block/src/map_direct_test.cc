// Image::MapDirect, format by format: what maps (allocated data, holes,
// backing files, in-place overwrites), what does not (allocation,
// copy-on-write, compressed clusters, uncached tables, read-only writes), and
// qcow2's lease keeping a mapped cluster from being freed.
#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>

#include "block/file.h"
#include "block/qcow2.h"
#include "block/qed.h"
#include "block/raw.h"
#include "block/vhd.h"
#include "kindling/test_skip.h"
#include "libs/block/src/test_util.h"

using namespace block;
using block_test::HaveQemuImg;
using block_test::Pattern;
using block_test::Run;
using block_test::TempDir;
using block_test::WriteFile;

namespace {

// The extents as (file name or "zeros", offset, length) for readable checks.
std::string Describe(const DirectMapping& m) {
  std::string s;
  for (const HostExtent& e : m.extents) {
    s += (e.file ? e.file->name() : std::string("zeros")) + "@" +
         std::to_string(e.offset) + "+" + std::to_string(e.length) + " ";
  }
  return s;
}

}  // namespace

TEST_CASE("MapDirect: raw and fixed VHD are the identity; read-only writes do not map") {
  TempDir dir;
  REQUIRE(RawImage::Create(dir.Path("d.raw"), 1 << 20).ok());
  REQUIRE(VhdImage::Create(dir.Path("d.vhd"), {.size = 1 << 20, .fixed = true}).ok());
  for (const char* name : {"d.raw", "d.vhd"}) {
    INFO(name);
    auto img = OpenImage(dir.Path(name), {});
    REQUIRE(img.ok());
    auto m = (*img)->MapDirect(4096, 8192, true);
    REQUIRE(m.has_value());
    REQUIRE(m->extents.size() == 1);
    REQUIRE(m->extents[0].offset == 4096);
    REQUIRE(m->extents[0].length == 8192);
    REQUIRE_FALSE((*img)->MapDirect((1 << 20) - 512, 1024, false).has_value());
    REQUIRE_FALSE((*img)->MapDirect(0, 0, false).has_value());
    auto ro = OpenImage(dir.Path(name), {.read_only = true});
    REQUIRE(ro.ok());
    REQUIRE((*ro)->MapDirect(0, 512, false).has_value());
    REQUIRE_FALSE((*ro)->MapDirect(0, 512, true).has_value());
  }
}

TEST_CASE("MapDirect: qcow2 maps data, zeros and the backing file; never an allocation") {
  TempDir dir;
  const uint64_t cs = 65536;
  WriteFile(dir.Path("base.raw"), Pattern(4 * cs, 1));  // shorter than the overlay
  REQUIRE(Qcow2Image::Create(dir.Path("top.qcow2"),
                             {.size = 8 * cs, .backing_file = "base.raw",
                              .backing_format = "raw"}).ok());
  auto img = OpenImage(dir.Path("top.qcow2"), {});
  REQUIRE(img.ok());
  Image& q = **img;
  // Nothing allocated: clusters 0-3 lie in base.raw, 4-7 read zeros.
  auto m = q.MapDirect(cs / 2, 6 * cs, false);
  REQUIRE(m.has_value());
  INFO(Describe(*m));
  REQUIRE(m->extents.size() == 2);
  REQUIRE(m->extents[0].file->name().ends_with("base.raw"));
  REQUIRE(m->extents[0].offset == cs / 2);
  REQUIRE(m->extents[0].length == 4 * cs - cs / 2);
  REQUIRE(m->extents[1].file == nullptr);
  REQUIRE(m->extents[1].length == 2 * cs + cs / 2);
  REQUIRE_FALSE(q.MapDirect(0, 512, true).has_value());  // would allocate
  m.reset();
  // Allocate cluster 1, zero cluster 2: a write maps only onto cluster 1.
  auto d = Pattern(cs, 2);
  REQUIRE(q.Write(cs, d.data(), cs).ok());
  REQUIRE(q.WriteZeroes(2 * cs, cs).ok());
  m = q.MapDirect(cs, cs, true);
  REQUIRE(m.has_value());
  REQUIRE(m->extents.size() == 1);
  REQUIRE(m->extents[0].file->name().ends_with("top.qcow2"));
  const uint64_t host = m->extents[0].offset;
  m.reset();
  REQUIRE_FALSE(q.MapDirect(cs, cs + 1, true).has_value());  // into the zero cluster
  m = q.MapDirect(0, 3 * cs, false);
  REQUIRE(m.has_value());
  INFO(Describe(*m));
  REQUIRE(m->extents.size() == 3);  // base.raw, our cluster, zeros
  REQUIRE(m->extents[1].offset == host);
  REQUIRE(m->extents[2].file == nullptr);
  m.reset();
  // Read through the map: the bytes at `host` are the data we wrote.
  std::vector<uint8_t> back(cs);
  File f = *File::Open(dir.Path("top.qcow2"), {.read_only = true});
  REQUIRE(f.PRead(back.data(), cs, host).ok());
  REQUIRE(back == d);
}

TEST_CASE("MapDirect: a qcow2 cluster shared with a snapshot maps for reads only") {
  TempDir dir;
  const uint64_t cs = 65536;
  REQUIRE(Qcow2Image::Create(dir.Path("s.qcow2"), {.size = 4 * cs}).ok());
  auto img = Qcow2Image::Open(dir.Path("s.qcow2"), {});
  REQUIRE(img.ok());
  auto d = Pattern(cs, 3);
  REQUIRE((*img)->Write(0, d.data(), cs).ok());
  REQUIRE((*img)->MapDirect(0, cs, true).has_value());
  REQUIRE((*img)->CreateSnapshot("s1").ok());
  REQUIRE((*img)->MapDirect(0, cs, false).has_value());
  REQUIRE_FALSE((*img)->MapDirect(0, cs, true).has_value());  // copy on write
  REQUIRE((*img)->Write(0, d.data(), cs).ok());                // ... done here
  REQUIRE((*img)->MapDirect(0, cs, true).has_value());
}

TEST_CASE("MapDirect: qcow2 tables not in the cache and compressed clusters do not map") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");
  TempDir dir;
  std::vector<uint8_t> data(1 << 20, 'k');
  WriteFile(dir.Path("src.raw"), data);
  auto r = Run("qemu-img convert -c -O qcow2 " + dir.Path("src.raw") + " " +
               dir.Path("c.qcow2"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto img = OpenImage(dir.Path("c.qcow2"), {});
  REQUIRE(img.ok());
  REQUIRE_FALSE((*img)->MapDirect(0, 4096, false).has_value());  // L2 not loaded
  std::vector<uint8_t> buf(4096);
  REQUIRE((*img)->Read(0, buf.data(), buf.size()).ok());          // loads it
  REQUIRE(buf[0] == 'k');
  REQUIRE_FALSE((*img)->MapDirect(0, 4096, false).has_value());  // compressed
}

TEST_CASE("MapDirect: QED and dynamic VHD map allocated clusters and holes") {
  TempDir dir;
  const uint64_t size = 4 << 20;
  WriteFile(dir.Path("base.raw"), Pattern(size, 4));
  REQUIRE(QedImage::Create(dir.Path("d.qed"), {.size = size, .cluster_size = 65536,
                                               .backing_file = "base.raw",
                                               .backing_format = "raw"}).ok());
  REQUIRE(VhdImage::Create(dir.Path("d.vhd"), {.size = size, .block_size = 1 << 20}).ok());
  for (const char* name : {"d.qed", "d.vhd"}) {
    INFO(name);
    auto img = OpenImage(dir.Path(name), {});
    REQUIRE(img.ok());
    Image& q = **img;
    REQUIRE_FALSE(q.MapDirect(0, 4096, true).has_value());  // would allocate
    auto d = Pattern(4096, 5);
    REQUIRE(q.Write(0, d.data(), d.size()).ok());
    auto m = q.MapDirect(0, 4096, true);
    REQUIRE(m.has_value());
    REQUIRE(m->extents.size() == 1);
    REQUIRE(m->extents[0].file->name().ends_with(name));
    std::vector<uint8_t> back(4096);
    File f = *File::Open(dir.Path(name), {.read_only = true});
    REQUIRE(f.PRead(back.data(), back.size(), m->extents[0].offset).ok());
    REQUIRE(back == d);
    // Past the first cluster/block: QED reads base.raw, VHD zeros.
    m = q.MapDirect(2 << 20, 4096, false);
    REQUIRE(m.has_value());
    REQUIRE(m->extents.size() == 1);
    if (std::string(name) == "d.qed") {
      REQUIRE(m->extents[0].file->name().ends_with("base.raw"));
      REQUIRE(m->extents[0].offset == 2 << 20);
    } else {
      REQUIRE(m->extents[0].file == nullptr);
    }
  }
}

// The lease: a discarded cluster is not freed (so not reused) while a
// mapping of it is held; the flush that would free it waits for the release.
TEST_CASE("MapDirect: a held qcow2 mapping keeps its cluster from being freed") {
  TempDir dir;
  const uint64_t cs = 65536;
  const std::string path = dir.Path("l.qcow2");
  REQUIRE(Qcow2Image::Create(path, {.size = 4 * cs}).ok());
  auto img = Qcow2Image::Open(path, {});
  REQUIRE(img.ok());
  Qcow2Image& q = **img;
  auto d = Pattern(cs, 6);
  REQUIRE(q.Write(0, d.data(), cs).ok());
  REQUIRE(q.Flush().ok());
  auto m = q.MapDirect(0, cs, false);
  REQUIRE(m.has_value());
  const uint64_t host = m->extents[0].offset;
  REQUIRE(q.Discard(0, cs).ok());
  auto flushed = std::async(std::launch::async, [&] { return q.Flush(); });
  // Not a timing assertion: a correct image never finishes this flush while
  // the mapping is held, however long we wait.
  REQUIRE(flushed.wait_for(std::chrono::milliseconds(200)) == std::future_status::timeout);
  m->Release();
  REQUIRE(flushed.get().ok());
  // Now the cluster is free again and the next allocation may take it.
  REQUIRE(q.Write(cs, d.data(), cs).ok());
  auto m2 = q.MapDirect(cs, cs, false);
  REQUIRE(m2.has_value());
  REQUIRE(m2->extents[0].offset == host);
}
