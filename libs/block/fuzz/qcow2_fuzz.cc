// Fuzzes qcow2 metadata parsing and the read/write/check paths. The input
// either is a whole image (if it starts with the qcow2 magic) or is a list
// of patches (offset, bytes) applied to a small valid image with data, so
// random inputs reach past the header checks. Every outcome must be a
// clean status: no crash, no hang, no sanitizer report.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "block/qcow2.h"

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
      FILE* f = fopen(path, "rb");
      if (f) {
        uint8_t buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
        fclose(f);
      }
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
    img = Seed();
    if (img.empty()) return 0;
    // Patches: 2-byte offset (in 8-byte units), 1-byte length, bytes.
    size_t i = 1;
    while (i + 3 <= size) {
      size_t off = ((size_t(data[i]) << 8 | data[i + 1]) * 8) % img.size();
      size_t len = data[i + 2] % 16;
      i += 3;
      for (size_t j = 0; j < len && i < size && off + j < img.size(); ++j, ++i) {
        img[off + j] = data[i];
      }
    }
  }
  int fd = memfd_create("qcow2_fuzz", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (write(fd, img.data(), img.size()) != static_cast<ssize_t>(img.size())) {
    close(fd);
    return 0;
  }
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
