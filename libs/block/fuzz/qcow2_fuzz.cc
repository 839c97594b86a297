// Fuzzes qcow2 metadata parsing and the read/write/check paths. The input
// either is a whole image (if it starts with the qcow2 magic) or is a list
// of patches (offset, bytes) applied to a small valid image with data, so
// random inputs reach past the header checks. Every outcome must be a
// clean status: no crash, no hang, no sanitizer report.
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "block/qcow2.h"
#include "libs/block/fuzz/image_fuzz_util.h"

namespace {

const std::vector<uint8_t>& Seed() {
  static const std::vector<uint8_t> seed = [] {
    char path[] = "/tmp/qcow2_fuzz_seedXXXXXX";
    int fd = mkstemp(path);
    close(fd);
    std::vector<uint8_t> out;
    block::Qcow2CreateOptions o{.size = 64 << 10, .cluster_size = 512};
    if (block::Qcow2Image::Create(path, o).ok()) {
      auto q = block::Qcow2Image::Open(path, {});
      if (q.ok()) {
        std::vector<uint8_t> d(20000, 0x5a);
        (void)(*q)->Write(3000, d.data(), d.size());
        (void)(*q)->WriteZeroes(40000, 4096);
        q->reset();
      }
      out = block_fuzz::ReadWholeFile(path);
    }
    unlink(path);
    // Drop the zero tail the allocator preallocates (1 MiB chunks): a
    // smaller file keeps each run fast.
    size_t end = out.size();
    while (end > 0 && out[end - 1] == 0) --end;
    out.resize((end + 511) / 512 * 512);
    return out;
  }();
  return seed;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> img;
  bool writable = size > 0 && (data[0] & 1);
  if (size >= 4 && memcmp(data, "QFI\xfb", 4) == 0) {
    img.assign(data, data + size);
  } else {
    // Patches over the seed: 2-byte offset (in 8-byte units), length, bytes.
    img = block_fuzz::PatchSeed(Seed(), data, size, 8);
    if (img.empty()) return 0;
  }
  int fd = block_fuzz::MemfdWith("qcow2_fuzz", img);
  if (fd < 0) return 0;
  auto q = block::Qcow2Image::OpenFile(block::File::FromFd(fd, "fuzz.qcow2", !writable),
                                       {.read_only = !writable});
  if (!q.ok()) return 0;
  block::Qcow2Image& image = **q;
  const uint64_t disk = image.size();
  std::vector<uint8_t> buf(16 << 10);
  for (uint64_t off = 0; off < disk && off < (1 << 20); off += buf.size()) {
    uint64_t n = std::min<uint64_t>(buf.size(), disk - off);
    (void)image.Read(off, buf.data(), n);
  }
  if (writable && disk > 0) {
    (void)image.Write(disk / 3, buf.data(), std::min<uint64_t>(disk - disk / 3, 5000));
    (void)image.WriteZeroes(0, std::min<uint64_t>(disk, 8192));
    (void)image.Discard(disk / 2, std::min<uint64_t>(disk - disk / 2, 65536));
    (void)image.Flush();
  }
  (void)image.Check(writable ? block::RepairMode::kAll : block::RepairMode::kNone);
  return 0;
}
