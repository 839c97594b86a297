// Fuzzes QED header and L1/L2 table parsing and the read/write paths: the input
// is a whole image if it holds a "QED\\0" magic, else patches
// (offset, bytes) over a small valid dynamic disk with data.
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "block/qed.h"
#include "libs/block/fuzz/image_fuzz_util.h"

namespace {

const std::vector<uint8_t>& Seed() {
  static const std::vector<uint8_t> seed = [] {
    char path[] = "/tmp/qed_fuzz_seedXXXXXX";
    int fd = mkstemp(path);
    close(fd);
    std::vector<uint8_t> out;
    if (block::QedImage::Create(path, {.size = 1 << 20, .cluster_size = 4096, .table_size = 1}).ok()) {
      auto v = block::OpenImage(path, {.format = "qed"});
      if (v.ok()) {
        std::vector<uint8_t> d(100000, 0x33);
        (void)(*v)->Write(5000, d.data(), d.size());
        v->reset();
      }
      out = block_fuzz::ReadWholeFile(path);
    }
    unlink(path);
    return out;
  }();
  return seed;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> img;
  const bool writable = size > 0 && (data[0] & 1);
  if (size >= 4 && memcmp(data, "QED\0", 4) == 0) {
    img.assign(data, data + size);
  } else {
    // Patches over the seed: 2-byte offset (in 4-byte units), length, bytes.
    img = block_fuzz::PatchSeed(Seed(), data, size, 4);
    if (img.empty()) return 0;
  }
  int fd = block_fuzz::MemfdWith("qed_fuzz", img);
  if (fd < 0) return 0;
  auto v = block::QedImage::OpenFile(block::File::FromFd(fd, "fuzz.qed", !writable),
                                     {.read_only = !writable});
  if (!v.ok()) return 0;
  const uint64_t disk = (*v)->size();
  std::vector<uint8_t> buf(64 << 10);
  for (uint64_t off = 0; off < disk && off < (4 << 20); off += buf.size()) {
    (void)(*v)->Read(off, buf.data(), std::min<uint64_t>(buf.size(), disk - off));
  }
  if (writable && disk > 0) {
    (void)(*v)->Write(disk / 3, buf.data(), std::min<uint64_t>(disk - disk / 3, 5000));
    (void)(*v)->WriteZeroes(0, std::min<uint64_t>(disk, 8192));
    (void)(*v)->Flush();
  }
  (void)(*v)->Check(writable);
  return 0;
}
