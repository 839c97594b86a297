// Host-side peer for virtio_vsock (a Linux host program, not a guest):
//
//   vsock_peer echo PORT [TIMEOUT_S]       accept one connection on
//       VMADDR_CID_ANY:PORT, read one line, write it back, close
//   vsock_peer connect CID PORT [TIMEOUT_S]  connect to the guest (retrying
//       while it refuses: it may not listen yet), send "hello from the
//       host\n", expect "echo: hello from the host\n" back, close
//
// Prints `vsock-peer: ...` lines; exit 0 on success, 1 on failure, 77 when
// the host has no AF_VSOCK. Build: gcc -O2 -static -o vsock_peer vsock_peer.c
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int timeout_s = 30;

static int read_line(int fd, char* buf, size_t size) {
  size_t n = 0;
  while (n + 1 < size) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_s * 1000) != 1) return -1;
    ssize_t r = read(fd, buf + n, 1);
    if (r <= 0) return -1;
    if (buf[n++] == '\n') break;
  }
  buf[n] = '\0';
  return (int)n;
}

static int echo(unsigned port) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) {
    printf("vsock-peer: SKIP: no AF_VSOCK: %s\n", strerror(errno));
    return 77;
  }
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
  if (bind(s, (struct sockaddr*)&a, sizeof(a)) || listen(s, 1)) {
    printf("vsock-peer: FAIL: bind/listen port %u: %s\n", port, strerror(errno));
    return 1;
  }
  struct pollfd p = {s, POLLIN, 0};
  if (poll(&p, 1, timeout_s * 1000) != 1) {
    printf("vsock-peer: FAIL: no connection within %d s\n", timeout_s);
    return 1;
  }
  socklen_t len = sizeof(a);
  int fd = accept(s, (struct sockaddr*)&a, &len);
  if (fd < 0) {
    printf("vsock-peer: FAIL: accept: %s\n", strerror(errno));
    return 1;
  }
  printf("vsock-peer: connection from cid %u port %u\n", a.svm_cid, a.svm_port);
  char line[1024];
  int n = read_line(fd, line, sizeof(line));
  if (n <= 0) {
    printf("vsock-peer: FAIL: no line from the guest\n");
    return 1;
  }
  if (write(fd, line, (size_t)n) != n) {
    printf("vsock-peer: FAIL: write: %s\n", strerror(errno));
    return 1;
  }
  printf("vsock-peer: echoed %d bytes\n", n);
  // Wait for the guest to close (read returns 0) before closing.
  char c;
  struct pollfd q = {fd, POLLIN, 0};
  if (poll(&q, 1, timeout_s * 1000) == 1 && read(fd, &c, 1) == 0)
    printf("vsock-peer: guest closed\n");
  close(fd);
  return 0;
}

static int connect_guest(unsigned cid, unsigned port) {
  time_t end = time(NULL) + timeout_s;
  int fd;
  for (;;) {
    fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) {
      printf("vsock-peer: SKIP: no AF_VSOCK: %s\n", strerror(errno));
      return 77;
    }
    struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
    if (!connect(fd, (struct sockaddr*)&a, sizeof(a))) break;
    int e = errno;
    close(fd);
    if (time(NULL) > end) {
      printf("vsock-peer: FAIL: connect to %u:%u: %s\n", cid, port, strerror(e));
      return 1;
    }
    usleep(100000);
  }
  printf("vsock-peer: connected to cid %u port %u\n", cid, port);
  const char msg[] = "hello from the host\n";
  if (write(fd, msg, sizeof(msg) - 1) != (ssize_t)(sizeof(msg) - 1)) {
    printf("vsock-peer: FAIL: write: %s\n", strerror(errno));
    return 1;
  }
  char line[1024];
  int n = read_line(fd, line, sizeof(line));
  if (n <= 0 || strcmp(line, "echo: hello from the host\n")) {
    printf("vsock-peer: FAIL: got %d bytes back: %s\n", n, n > 0 ? line : "");
    return 1;
  }
  printf("vsock-peer: guest echoed %d bytes\n", n);
  close(fd);
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 3 && !strcmp(argv[1], "echo")) {
    if (argc > 3) timeout_s = atoi(argv[3]);
    return echo((unsigned)atoi(argv[2]));
  }
  if (argc >= 4 && !strcmp(argv[1], "connect")) {
    if (argc > 4) timeout_s = atoi(argv[4]);
    return connect_guest((unsigned)atoi(argv[2]), (unsigned)atoi(argv[3]));
  }
  fprintf(stderr, "usage: vsock_peer echo PORT [T] | connect CID PORT [T]\n");
  return 2;
}
