// Fuzzes VHD footer/header/BAT parsing and the read/write paths: the input
// is a whole image if it holds a "conectix" cookie at 0, else patches
// (offset, bytes) over a small valid dynamic disk with data, or (input byte
// 0 bit 1) over a differencing disk with data over such a parent, which it
// opens (parent locators, unique ID, sector bitmaps).
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "block/vhd.h"
#include "libs/block/fuzz/image_fuzz_util.h"

namespace {

// A dynamic disk at `path` (or a differencing one over `parent`) with data.
std::vector<uint8_t> MakeSeed(const std::string& path, const std::string& parent) {
  block::VhdCreateOptions o{.size = parent.empty() ? 1u << 20 : 0, .block_size = 65536,
                            .parent = parent};
  if (!block::VhdImage::Create(path, o).ok()) return {};
  auto v = block::OpenImage(path, {});
  if (!v.ok()) return {};
  std::vector<uint8_t> d(100000, parent.empty() ? 0x33 : 0x44);
  (void)(*v)->Write(parent.empty() ? 5000 : 70001, d.data(), d.size());
  v->reset();
  return block_fuzz::ReadWholeFile(path.c_str());
}

// A directory that holds the parent for as long as the fuzzer runs.
const std::string& Dir() {
  static const std::string dir = [] {
    static char tmpl[] = "/tmp/vhd_fuzzXXXXXX";
    if (mkdtemp(tmpl) == nullptr) return std::string("/tmp");
    std::atexit([] {
      unlink((std::string(tmpl) + "/parent.vhd").c_str());
      rmdir(tmpl);
    });
    return std::string(tmpl);
  }();
  return dir;
}

const std::vector<uint8_t>& Seed(bool differencing) {
  static const std::vector<uint8_t> dynamic = MakeSeed(Dir() + "/parent.vhd", "");
  static const std::vector<uint8_t> child = [] {
    auto c = MakeSeed(Dir() + "/child.vhd", "parent.vhd");
    unlink((Dir() + "/child.vhd").c_str());  // the input stands in for it
    return c;
  }();
  return differencing ? child : dynamic;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> img;
  const bool writable = size > 0 && (data[0] & 1);
  const bool differencing = size > 0 && (data[0] & 2);
  if (size >= 8 && memcmp(data, "conectix", 8) == 0) {
    img.assign(data, data + size);
  } else {
    // Patches over the seed: 2-byte offset (in 4-byte units), length, bytes.
    img = block_fuzz::PatchSeed(Seed(differencing), data, size, 4);
    if (img.empty()) return 0;
  }
  int fd = block_fuzz::MemfdWith("vhd_fuzz", img);
  if (fd < 0) return 0;
  std::vector<std::string> chain;
  auto v = block::VhdImage::OpenFile(
      block::File::FromFd(fd, Dir() + "/child.vhd", !writable), &chain);
  if (!v.ok()) return 0;
  const uint64_t disk = (*v)->size();
  std::vector<uint8_t> buf(64 << 10);
  for (uint64_t off = 0; off < disk && off < (4 << 20); off += buf.size()) {
    (void)(*v)->Read(off, buf.data(), std::min<uint64_t>(buf.size(), disk - off));
  }
  if (writable && disk > 0) {
    (void)(*v)->Write(disk / 3, buf.data(), std::min<uint64_t>(disk - disk / 3, 5000));
    (void)(*v)->Flush();
  }
  return 0;
}
