// Fuzzes the request path of raw images: arbitrary (op, offset, length)
// triples, including ones that overflow or leave the disk, against a
// 1 MiB sparse memfd. Every request must succeed inside the disk or fail
// with OutOfRange; nothing may crash.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "block/image.h"
#include "block/raw.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = memfd_create("raw_fuzz", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, 1 << 20) != 0) return 0;
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  auto img = block::RawImage::Open(path, {});
  close(fd);
  if (!img.ok()) return 0;
  std::vector<uint8_t> buf(64 << 10);
  for (size_t i = 0; i + 17 <= size; i += 17) {
    uint64_t off, len;
    memcpy(&off, data + i + 1, 8);
    memcpy(&len, data + i + 9, 8);
    if (data[i] & 0x80) off %= (2 << 20);
    len %= buf.size() + 1;
    switch (data[i] % 5) {
      case 0: (void)(*img)->Read(off, buf.data(), len); break;
      case 1: (void)(*img)->Write(off, buf.data(), len); break;
      case 2: (void)(*img)->Discard(off, len); break;
      case 3: (void)(*img)->WriteZeroes(off, len); break;
      case 4: (void)(*img)->BlockStatus(off, len); break;
    }
  }
  return 0;
}
