// Fuzzes the NBD client's handling of server bytes: the input is everything
// the "server" says (handshake, option replies, simple and structured
// replies), pre-written into a socketpair whose far end is then closed.
// The client must fail cleanly or succeed; never crash, hang or overrun.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "block/nbd.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 60000) return 0;  // stays within the socket buffer
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 0;
  int buf = 1 << 20;
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  size_t off = 0;
  while (off < size) {
    ssize_t n = write(sv[1], data + off, size - off);
    if (n <= 0) break;
    off += n;
  }
  // Keep sv[1] open but unread: the client's own sends land in its buffer;
  // shut down its write side so the client sees EOF after the input.
  shutdown(sv[1], SHUT_WR);
  bool structured = size & 1;  // odd-sized inputs ask for structured replies
  auto n = block::NbdImage::FromSocket(sv[0], "fuzz", "e",
                                       {.read_only = true, .timeout_s = 1,
                                        .structured_replies = structured});
  if (n.ok()) {
    std::vector<uint8_t> b(8192);
    uint64_t disk = (*n)->size();
    if (disk > 0) {
      (void)(*n)->Read(0, b.data(), std::min<uint64_t>(b.size(), disk));
      (void)(*n)->Read(disk - std::min<uint64_t>(disk, 512), b.data(),
                       std::min<uint64_t>(disk, 512));
    }
    (void)(*n)->Flush();
  }
  close(sv[1]);
  return 0;
}
