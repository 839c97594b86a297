// libFuzzer: a live migration's stream as a hostile source sends it. The
// bytes arrive on a socket; the destination reads the HELLO and then pages,
// zero ranges and the state into 1 MiB of guest RAM. Every frame must be
// refused cleanly or loaded inside the RAM, never crash or overrun.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "libs/migration/fuzz/stream_input.h"
#include "migration/precopy.h"
#include "migration/stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<vm_memory::GuestMemory> ram = [] {
    vm_memory::RegionSpec spec{vm_memory::GuestAddress(0), 1 << 20};
    return std::move(*vm_memory::GuestMemory::Create({&spec, 1}));
  }();
  if (size > (4 << 20)) return 0;
  int fds[2];
  // Bigger than any input: the whole stream fits in the socket's buffer.
  if (!StreamInput(data, size, 8 << 20, fds)) return 0;
  migration::FrameStream s(fds[1]);
  auto hello = migration::ReceiveHello(s, absl::Now() + absl::Milliseconds(200));
  if (hello.ok()) {
    (void)migration::ReceiveMemoryAndState(s, *ram, absl::Milliseconds(200));
  }
  ::close(fds[0]);
  ::close(fds[1]);
  return 0;
}
