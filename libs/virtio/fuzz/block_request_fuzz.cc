// Fuzzes virtio-blk request parsing: guest memory from the input (see
// fuzz_env.h) against a 64 KiB raw disk in a memfd. Requests may fail
// with a status byte or break the queue; nothing may crash or hang.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>

#include "libs/virtio/fuzz/fuzz_env.h"
#include "virtio/block.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  virtio::Queue q(256);
  auto mem = virtio::fuzz::MakeGuest(data, size, q);
  if (!mem) return 0;
  int fd = memfd_create("blk_fuzz", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, 64 << 10) != 0) return 0;
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  block::OpenOptions o;
  o.format = "raw";
  auto img = block::OpenImage(path, o);
  close(fd);
  if (!img.ok()) return 0;
  virtio::Block blk(std::move(*img), {size > 1 && (data[1] & 8), "fuzz"});
  virtio::fuzz::NullInterrupt irq;
  int again = 0;
  virtio::ActivateContext ctx{mem.get(), {&q, 1}, &irq, 0, [&](uint16_t) { ++again; }};
  if (!blk.Activate(ctx).ok()) return 0;
  for (int i = 0; i < 4 && blk.ProcessQueue(0).ok(); ++i) {
  }
  return 0;
}
