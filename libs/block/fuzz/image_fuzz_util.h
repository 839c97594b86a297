// Helpers shared by the image-format fuzz targets (qcow2, QED, VHD): read a
// seed image built at start-up, turn a fuzz input into an image (the input
// itself, or byte patches over the seed) and hand it to a format as a memfd.
#ifndef BLOCK_FUZZ_IMAGE_FUZZ_UTIL_H_
#define BLOCK_FUZZ_IMAGE_FUZZ_UTIL_H_

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <vector>

namespace block_fuzz {

// The whole file at `path` (empty if it cannot be read).
inline std::vector<uint8_t> ReadWholeFile(const char* path) {
  std::vector<uint8_t> out;
  FILE* f = fopen(path, "rb");
  if (f == nullptr) return out;
  uint8_t buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
  fclose(f);
  return out;
}

// Applies the patches in data[1..size): each is a 2-byte big-endian offset
// (in units of `offset_unit` bytes, wrapped to the image), a length byte
// (mod 16) and that many bytes. data[0] is left for the caller's flags.
inline std::vector<uint8_t> PatchSeed(std::vector<uint8_t> img,
                                      const uint8_t* data, size_t size,
                                      size_t offset_unit) {
  if (img.empty()) return img;
  size_t i = 1;
  while (i + 3 <= size) {
    size_t off = ((size_t(data[i]) << 8 | data[i + 1]) * offset_unit) % img.size();
    size_t len = data[i + 2] % 16;
    i += 3;
    for (size_t j = 0; j < len && i < size && off + j < img.size(); ++j, ++i) {
      img[off + j] = data[i];
    }
  }
  return img;
}

// A memfd holding `img`, or -1.
inline int MemfdWith(const char* name, const std::vector<uint8_t>& img) {
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return -1;
  if (write(fd, img.data(), img.size()) != static_cast<ssize_t>(img.size())) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace block_fuzz

#endif  // BLOCK_FUZZ_IMAGE_FUZZ_UTIL_H_
