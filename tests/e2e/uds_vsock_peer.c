// The host side of kindling's virtio-vsock for tests: Unix sockets in
// Firecracker's convention.
//
//   uds_vsock_peer echo PATH_PORT     listen on PATH_PORT (where kindling
//       connects when the guest connects to host port PORT), accept one
//       connection, read one line, write it back, close
//   uds_vsock_peer connect PATH PORT  connect to PATH (kindling's socket),
//       send "CONNECT PORT\n", expect "OK <n>\n", send "hello from the
//       host\n", expect "echo: hello from the host\n"; retried for 30 s
//       while kindling or the guest is not ready
//   A last argument TIMEOUT_S replaces the 30 s of either.
//
// Prints `uds-peer: ...` lines; exit 0 on success, 1 on failure.
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int timeout_ms = 30000;  // generous: nested KVM under TCG is slow

static int read_line(int fd, char* buf, size_t size) {
  size_t n = 0;
  while (n + 1 < size) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return -1;
    ssize_t r = read(fd, buf + n, 1);
    if (r <= 0) return -1;
    if (buf[n++] == '\n') break;
  }
  buf[n] = 0;
  return (int)n;
}

static int write_all(int fd, const char* s) {
  size_t len = strlen(s);
  while (len > 0) {
    ssize_t w = write(fd, s, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    s += w;
    len -= (size_t)w;
  }
  return 0;
}

static int make_addr(const char* path, struct sockaddr_un* a) {
  memset(a, 0, sizeof(*a));
  a->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof(a->sun_path)) return -1;
  strcpy(a->sun_path, path);
  return 0;
}

static int echo(const char* path) {
  struct sockaddr_un a;
  if (make_addr(path, &a) != 0) return 1;
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  unlink(path);
  if (s < 0 || bind(s, (struct sockaddr*)&a, sizeof(a)) != 0 || listen(s, 1) != 0) {
    printf("uds-peer: cannot listen on %s: %s\n", path, strerror(errno));
    return 1;
  }
  struct pollfd p = {s, POLLIN, 0};
  if (poll(&p, 1, 3 * timeout_ms) != 1) {
    printf("uds-peer: nobody connected to %s\n", path);
    return 1;
  }
  int c = accept(s, NULL, NULL);
  char line[256];
  if (c < 0 || read_line(c, line, sizeof line) <= 0 || write_all(c, line) != 0) {
    printf("uds-peer: echo on %s failed\n", path);
    return 1;
  }
  printf("uds-peer: echoed %zu bytes from the guest\n", strlen(line));
  close(c);
  return 0;
}

// One attempt; 0 ok, 1 retryable, 2 fatal.
static int try_connect(const char* path, const char* port) {
  struct sockaddr_un a;
  if (make_addr(path, &a) != 0) return 2;
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  if (s < 0) return 2;
  if (connect(s, (struct sockaddr*)&a, sizeof(a)) != 0) {
    close(s);
    return 1;
  }
  char line[256];
  snprintf(line, sizeof line, "CONNECT %s\n", port);
  if (write_all(s, line) != 0 || read_line(s, line, sizeof line) <= 0) {
    close(s);
    return 1;  // the guest was not listening yet: kindling closed us
  }
  if (strncmp(line, "OK ", 3) != 0) {
    printf("uds-peer: expected OK, got %s", line);
    close(s);
    return 2;
  }
  if (write_all(s, "hello from the host\n") != 0 || read_line(s, line, sizeof line) <= 0 ||
      strcmp(line, "echo: hello from the host\n") != 0) {
    printf("uds-peer: no echo from the guest\n");
    close(s);
    return 2;
  }
  printf("uds-peer: guest port %s echoed our line\n", port);
  close(s);
  return 0;
}

static int connect_guest(const char* path, const char* port) {
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    int r = try_connect(path, port);
    if (r != 1) return r;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((now.tv_sec - start.tv_sec) * 1000 > timeout_ms) {
      printf("uds-peer: could not reach guest port %s through %s\n", port, path);
      return 1;
    }
    usleep(50 * 1000);
  }
}

int main(int argc, char** argv) {
  // kindling closes our socket when the guest refuses (not listening yet):
  // a write then must fail with EPIPE and be retried, not kill us.
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 3 && strcmp(argv[1], "echo") == 0) {
    if (argc > 3) timeout_ms = atoi(argv[3]) * 1000;
    return echo(argv[2]);
  }
  if (argc >= 4 && strcmp(argv[1], "connect") == 0) {
    if (argc > 4) timeout_ms = atoi(argv[4]) * 1000;
    return connect_guest(argv[2], argv[3]) ? 1 : 0;
  }
  fprintf(stderr, "usage: uds_vsock_peer echo PATH [TIMEOUT_S] | connect PATH PORT [TIMEOUT_S]\n");
  return 2;
}
