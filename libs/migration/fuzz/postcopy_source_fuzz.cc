// libFuzzer: a post-copy source answering a hostile destination. After the
// switch-over the destination sends PAGE_REQUESTs (and DONE) for 1 MiB of
// guest RAM whose pages the source still holds; every request must be
// answered inside the RAM or refused cleanly, never crash, overrun or hang.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>

#include "libs/migration/fuzz/stream_input.h"
#include "migration/postcopy.h"
#include "migration/stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<vm_memory::GuestMemory> ram = [] {
    vm_memory::RegionSpec spec{vm_memory::GuestAddress(0), 1 << 20};
    return std::move(*vm_memory::GuestMemory::Create({&spec, 1}));
  }();
  if (size > (1 << 20)) return 0;
  int fds[2];  // fds[0]: the destination's end, fds[1]: the source's
  if (!StreamInput(data, size, 4 << 20, fds)) return 0;
  // Reads what the source sends (pages, GO, POSTCOPY_END) so it never blocks.
  std::thread drain([fd = fds[0]] {
    char b[65536];
    while (::read(fd, b, sizeof b) > 0) {
    }
  });
  // Which of the 256 pages are still missing: every page but those the
  // input's first byte picks out, so requests hit sent and unsent pages.
  migration::PageBitmap missing(1, std::vector<uint64_t>(4, ~0ULL));
  if (size > 0) missing[0][0] &= ~(uint64_t{data[0]} << 8);
  migration::FrameStream s(fds[1]);
  (void)migration::ServePostcopy(s, *ram, std::move(missing), 0, absl::Milliseconds(100),
                                 [] { return true; }, [] {},
                                 [](const migration::PostcopySourceStats&) {});
  ::shutdown(fds[1], SHUT_RDWR);
  drain.join();
  ::close(fds[0]);
  ::close(fds[1]);
  return 0;
}
