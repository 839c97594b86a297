// Fuzzes VHD footer/header/BAT parsing and the read/write paths: the input
// is a whole image if it holds a "conectix" cookie at 0, else patches
// (offset, bytes) over a small valid dynamic disk with data.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "block/vhd.h"

namespace {

const std::vector<uint8_t>& Seed() {
  static const std::vector<uint8_t> seed = [] {
    char path[] = "/tmp/vhd_fuzz_seedXXXXXX";
    int fd = mkstemp(path);
    close(fd);
    std::vector<uint8_t> out;
    if (block::VhdImage::Create(path, {.size = 1 << 20, .block_size = 65536}).ok()) {
      auto v = block::VhdImage::Open(path, {});
      if (v.ok()) {
        std::vector<uint8_t> d(100000, 0x33);
        (void)(*v)->Write(5000, d.data(), d.size());
        v->reset();
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
    return out;
  }();
  return seed;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> img;
  const bool writable = size > 0 && (data[0] & 1);
  if (size >= 8 && memcmp(data, "conectix", 8) == 0) {
    img.assign(data, data + size);
  } else {
    img = Seed();
    if (img.empty()) return 0;
    size_t i = 1;
    while (i + 3 <= size) {
      size_t off = ((size_t(data[i]) << 8 | data[i + 1]) * 4) % img.size();
      size_t len = data[i + 2] % 16;
      i += 3;
      for (size_t j = 0; j < len && i < size && off + j < img.size(); ++j, ++i) {
        img[off + j] = data[i];
      }
    }
  }
  int fd = memfd_create("vhd_fuzz", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (write(fd, img.data(), img.size()) != static_cast<ssize_t>(img.size())) {
    close(fd);
    return 0;
  }
  auto v = block::VhdImage::OpenFile(block::File::FromFd(fd, "fuzz.vhd", !writable));
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
