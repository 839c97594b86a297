// VHD differencing disks. QEMU has no differencing support, so the
// reference reader is libvhdi (python3-libvhdi, a forensic VHD library):
// what kindling writes into a child over a qemu-img-made parent reads back
// the same through libvhdi as through kindling; the parent stays unchanged.
//
// libvhdi 20210425 misreads a sector bitmap byte whose set bits are not a
// suffix of the byte (it shifts without masking: a sector counts as present
// when any earlier sector of its byte is), so the writes it checks are 4 KiB
// aligned (whole bitmap bytes), and one read of the whole disk returns
// parent data for present sectors, so it reads 64 KiB at a time (both
// seen on this version); sub-sector and odd-sector writes are checked
// by kindling's own reads after reopening, and the bit order (sector 0 = the
// first byte's top bit, as libvhdi reads it too) on the bytes themselves.
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>

#include "block/vhd.h"
#include "kindling/test_skip.h"
#include "libs/block/src/endian.h"
#include "libs/block/src/test_util.h"

using namespace block;
using block_test::HaveQemuImg;
using block_test::Pattern;
using block_test::ReadAll;
using block_test::Run;
using block_test::TempDir;
using block_test::WriteFile;

namespace {

bool HavePyvhdi() { return Run("/usr/bin/python3 -c 'import pyvhdi'").exit_code == 0; }

// The whole disk of `child` (over the chain `parents`, nearest first) as
// libvhdi reads it, into `out`.
block_test::CommandResult PyvhdiDump(const std::string& child,
                                     const std::vector<std::string>& parents,
                                     const std::string& out) {
  std::string py =
      "import pyvhdi, sys\n"
      "files = []\n"
      "for p in sys.argv[1:-1]:\n"
      "    f = pyvhdi.file(); f.open(p); files.append(f)\n"
      "for c, p in zip(files, files[1:]):\n"
      "    c.set_parent(p)\n"
      "top = files[0]\n"
      "assert top.get_disk_type() == 4, top.get_disk_type()\n"
      "out = bytearray()\n"
      "for off in range(0, top.media_size, 65536):\n"
      "    out += top.read_buffer_at_offset(min(65536, top.media_size - off), off)\n"
      "open(sys.argv[-1], 'wb').write(out)\n";
  WriteFile(out + ".py", std::vector<uint8_t>(py.begin(), py.end()));
  std::string cmd = "/usr/bin/python3 " + out + ".py " + child;
  for (const auto& p : parents) cmd += " " + p;
  return Run(cmd + " " + out + " 2>&1");
}

std::vector<uint8_t> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Where `a` and `b` first differ ("equal" if nowhere), for failure messages.
std::string FirstDifference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return "sizes " + std::to_string(a.size()) + " and " + std::to_string(b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) {
      size_t end = i;
      while (end < a.size() && a[end] != b[end]) ++end;
      return "bytes differ from offset " + std::to_string(i) + " for " + std::to_string(end - i);
    }
  }
  return "equal";
}

// Random writes (across blocks; with align 1 also partial sectors) and
// zeroes into `img`, mirrored in `model`.
void Scribble(Image& img, std::vector<uint8_t>& model, uint64_t seed, uint64_t align) {
  std::mt19937_64 rng(seed);
  const uint64_t size = img.size();
  for (int i = 0; i < 80; ++i) {
    const uint64_t len = (1 + rng() % (i % 3 == 0 ? 2000 : 200000)) / align * align + align;
    const uint64_t off = rng() % (size - len) / align * align;
    if (i % 9 == 0) {
      REQUIRE(img.WriteZeroes(off, len).ok());
      memset(&model[off], 0, len);
    } else {
      auto d = Pattern(len, rng());
      REQUIRE(img.Write(off, d.data(), len).ok());
      memcpy(&model[off], d.data(), len);
    }
  }
}

}  // namespace

TEST_CASE("VHD differencing: kindling writes over a qemu-img parent; libvhdi agrees") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");
  TempDir dir;
  const uint64_t size = 6 << 20;
  auto r = Run("qemu-img create -q -f vpc -o subformat=dynamic,force_size=on " +
               dir.Path("base.vhd") + " 6M && qemu-io -c 'write -P 0x3c 512k 3M' " +
               dir.Path("base.vhd"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::vector<uint8_t> base(size, 0);
  memset(&base[512 << 10], 0x3c, 3 << 20);
  // child over base, grandchild over child; both with 512 KiB blocks.
  REQUIRE(VhdImage::Create(dir.Path("child.vhd"),
                           {.block_size = 512 << 10, .parent = "base.vhd"}).ok());
  std::vector<uint8_t> model = base;
  {
    auto c = OpenImage(dir.Path("child.vhd"), {});
    REQUIRE(c.ok());
    REQUIRE((*c)->size() == size);
    REQUIRE((*c)->capabilities().backing);
    REQUIRE((ReadAll(**c) == base));  // nothing written yet: the parent shows
    Scribble(**c, model, 1, 4096);
    REQUIRE((ReadAll(**c) == model));
  }
  auto c = OpenImage(dir.Path("child.vhd"), {.read_only = true});
  REQUIRE(c.ok());
  REQUIRE((ReadAll(**c) == model));
  const std::vector<uint8_t> child_model = model;
  REQUIRE(VhdImage::Create(dir.Path("grand.vhd"),
                           {.block_size = 512 << 10, .parent = "child.vhd"}).ok());
  {
    auto g = OpenImage(dir.Path("grand.vhd"), {});
    REQUIRE(g.ok());
    Scribble(**g, model, 2, 4096);
    REQUIRE((ReadAll(**g) == model));
  }
  // The parent is untouched (qemu-img reads it).
  WriteFile(dir.Path("base.raw"), base);
  r = Run("qemu-img compare -f vpc -F raw " + dir.Path("base.vhd") + " " + dir.Path("base.raw"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  KINDLING_SKIP_UNLESS_INSTALLED(HavePyvhdi(), "python3-libvhdi (the reference reader)");
  r = PyvhdiDump(dir.Path("child.vhd"), {dir.Path("base.vhd")}, dir.Path("child.out"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(FirstDifference(ReadFileBytes(dir.Path("child.out")), child_model) == "equal");
  r = PyvhdiDump(dir.Path("grand.vhd"), {dir.Path("child.vhd"), dir.Path("base.vhd")},
                 dir.Path("grand.out"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(FirstDifference(ReadFileBytes(dir.Path("grand.out")), model) == "equal");
  // libvhdi names the parent we recorded.
  r = Run("vhdiinfo " + dir.Path("grand.vhd"));
  INFO(r.output);
  REQUIRE(r.output.find("child.vhd") != std::string::npos);
}

TEST_CASE("VHD differencing: sub-sector writes, the bitmap's bit order, reopening") {
  TempDir dir;
  const uint64_t size = 3 << 20;
  auto base = Pattern(size, 4);
  REQUIRE(VhdImage::Create(dir.Path("base.vhd"), {.size = size}).ok());
  {
    auto b = OpenImage(dir.Path("base.vhd"), {});
    REQUIRE(b.ok());
    REQUIRE((*b)->Write(0, base.data(), size).ok());
  }
  const std::string child = dir.Path("child.vhd");
  REQUIRE(VhdImage::Create(child, {.block_size = 1 << 20, .parent = "base.vhd"}).ok());
  std::vector<uint8_t> model = base;
  {
    auto c = OpenImage(child, {});
    REQUIRE(c.ok());
    // Sector 0 of block 1 alone, then 3 bytes inside its sector 10.
    auto d = Pattern(512 + 3, 5);
    REQUIRE((*c)->Write(1 << 20, d.data(), 512).ok());
    REQUIRE((*c)->Write((1 << 20) + 10 * 512 + 100, d.data() + 512, 3).ok());
    memcpy(&model[1 << 20], d.data(), 512);
    memcpy(&model[(1 << 20) + 10 * 512 + 100], d.data() + 512, 3);
    REQUIRE(FirstDifference(ReadAll(**c), model) == "equal");
  }
  // The block's bitmap: sectors 0 and 10 present, nothing else.
  File f = *File::Open(child, {.read_only = true});
  std::vector<uint8_t> dyn(1024);
  REQUIRE(f.PRead(dyn.data(), dyn.size(), 512).ok());
  std::vector<uint8_t> bat(8);
  REQUIRE(f.PRead(bat.data(), 8, internal::LoadBe64(&dyn[16])).ok());
  REQUIRE(internal::LoadBe32(&bat[0]) == 0xffffffff);  // block 0 untouched
  std::vector<uint8_t> bitmap(512);
  REQUIRE(f.PRead(bitmap.data(), 512, uint64_t(internal::LoadBe32(&bat[4])) * 512).ok());
  REQUIRE(bitmap[0] == 0x80);
  REQUIRE(bitmap[1] == 0x20);
  for (size_t i = 2; i < bitmap.size(); ++i) REQUIRE(bitmap[i] == 0);
  // Unaligned writes everywhere, checked after reopening.
  {
    auto c = OpenImage(child, {});
    REQUIRE(c.ok());
    Scribble(**c, model, 3, 1);
  }
  auto c = OpenImage(child, {.read_only = true});
  REQUIRE(c.ok());
  REQUIRE(FirstDifference(ReadAll(**c), model) == "equal");
  auto b = OpenImage(dir.Path("base.vhd"), {.read_only = true});
  REQUIRE(FirstDifference(ReadAll(**b), base) == "equal");
}

TEST_CASE("VHD differencing: a missing, replaced or looping parent is a clear error") {
  TempDir dir;
  const uint64_t size = 2 << 20;
  REQUIRE(VhdImage::Create(dir.Path("base.vhd"), {.size = size}).ok());
  REQUIRE(VhdImage::Create(dir.Path("child.vhd"), {.parent = "base.vhd"}).ok());
  REQUIRE(OpenImage(dir.Path("child.vhd"), {}).ok());
  // Replaced: a new base has another unique ID.
  REQUIRE(VhdImage::Create(dir.Path("base.vhd"), {.size = size}).ok());
  auto s = OpenImage(dir.Path("child.vhd"), {}).status();
  INFO(s.message());
  REQUIRE(absl::IsFailedPrecondition(s));
  REQUIRE(s.message().find("parent unique id (offset 40)") != std::string::npos);
  // Missing.
  REQUIRE(Run("rm " + dir.Path("base.vhd")).exit_code == 0);
  s = OpenImage(dir.Path("child.vhd"), {}).status();
  INFO(s.message());
  REQUIRE(absl::IsNotFound(s));
  REQUIRE(s.message().find("base.vhd") != std::string::npos);
  // A loop: the child renamed to the name its own locators give.
  REQUIRE(Run("mv " + dir.Path("child.vhd") + " " + dir.Path("base.vhd")).exit_code == 0);
  s = OpenImage(dir.Path("base.vhd"), {}).status();
  INFO(s.message());
  REQUIRE_FALSE(s.ok());
  REQUIRE(s.message().find("loop") != std::string::npos);
  // A fixed disk cannot have a parent; a parent must be a VHD.
  REQUIRE(VhdImage::Create(dir.Path("p.vhd"), {.size = size}).ok());
  REQUIRE(absl::IsInvalidArgument(
      VhdImage::Create(dir.Path("f.vhd"), {.fixed = true, .parent = "p.vhd"})));
  WriteFile(dir.Path("p.raw"), std::vector<uint8_t>(size, 0));
  REQUIRE_FALSE(VhdImage::Create(dir.Path("r.vhd"), {.parent = "p.raw"}).ok());
}

TEST_CASE("VHD differencing: locators pointing outside the file are named") {
  TempDir dir;
  REQUIRE(VhdImage::Create(dir.Path("base.vhd"), {.size = 1 << 20}).ok());
  const std::string child = dir.Path("child.vhd");
  REQUIRE(VhdImage::Create(child, {.parent = "base.vhd"}).ok());
  // Locator 0's data offset (dynamic header at 512, locators at +576, the
  // offset at +16 in the entry) past the end; fix the header checksum too.
  File f = *File::Open(child, {});
  std::vector<uint8_t> dyn(1024);
  REQUIRE(f.PRead(dyn.data(), 1024, 512).ok());
  internal::StoreBe64(&dyn[576 + 16], 1ULL << 40);
  uint32_t sum = 0;
  for (size_t i = 0; i < 1024; ++i) sum += (i >= 36 && i < 40) ? 0 : dyn[i];
  internal::StoreBe32(&dyn[36], ~sum);
  REQUIRE(f.PWrite(dyn.data(), 1024, 512).ok());
  auto s = OpenImage(child, {}).status();
  INFO(s.message());
  REQUIRE(absl::IsDataLoss(s));
  REQUIRE(s.message().find("parent locator 0 (offset 576)") != std::string::npos);
}

TEST_CASE("kindling-img-style create: a differencing VHD takes its parent's size") {
  TempDir dir;
  REQUIRE(VhdImage::Create(dir.Path("base.vhd"), {.size = 3 << 20}).ok());
  auto base = OpenImage(dir.Path("base.vhd"), {});
  REQUIRE(base.ok());
  auto d = Pattern(4096, 9);
  REQUIRE((*base)->Write(4096, d.data(), d.size()).ok());
  base->reset();
  REQUIRE(VhdImage::Create(dir.Path("c.vhd"), {.parent = dir.Path("base.vhd")}).ok());  // absolute
  auto c = VhdImage::Open(dir.Path("c.vhd"), {.read_only = true});
  REQUIRE(c.ok());
  REQUIRE((*c)->differencing());
  REQUIRE((*c)->parent_path() == dir.Path("base.vhd"));
  std::vector<uint8_t> back(4096);
  REQUIRE((*c)->Read(4096, back.data(), back.size()).ok());
  REQUIRE(back == d);
  // Opened on its own (no chain to open the parent with): refused, saying why.
  File f = *File::Open(dir.Path("c.vhd"), {.read_only = true});
  auto alone = VhdImage::OpenFile(std::move(f));
  REQUIRE(absl::IsUnimplemented(alone.status()));
}
