// For the stream fuzz targets: a connected socket pair whose fds[1] end
// holds `data` to read, then end-of-file (fds[0]'s writing side is shut).
// The buffers are enlarged to `buffer` bytes so the input fits unread.
#ifndef MIGRATION_FUZZ_STREAM_INPUT_H_
#define MIGRATION_FUZZ_STREAM_INPUT_H_

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

inline bool StreamInput(const uint8_t* data, size_t size, int buffer, int fds[2]) {
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return false;
  ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  ::setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  size_t off = 0;
  while (off < size) {
    ssize_t n = ::send(fds[0], data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n <= 0) break;
    off += n;
  }
  ::shutdown(fds[0], SHUT_WR);
  return true;
}

#endif  // MIGRATION_FUZZ_STREAM_INPUT_H_
