// The guest side of linux_virtio_test's vsock check, run by
// linux_virtio_init.sh inside Debian's stock kernel (static, no libc
// beyond what it links in):
//
//   linux_vsock serve PORT      accept one connection on PORT, read one
//                               line, answer "echo: <line>", close
//   linux_vsock connect PORT    connect to the host (CID 2) port PORT, send
//                               "hello from linux\n", expect it echoed
//
// Prints `linux-virtio: vsock ...` lines; exit 0 on success. Every wait is
// bounded (30 s) so a broken device fails the test instead of hanging it.
#include <errno.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { kTimeoutMs = 30000 };

static int read_line(int fd, char* buf, size_t size) {
  size_t n = 0;
  while (n + 1 < size) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, kTimeoutMs) != 1) return -1;
    ssize_t r = read(fd, buf + n, 1);
    if (r <= 0) return -1;
    if (buf[n++] == '\n') break;
  }
  buf[n] = 0;
  return (int)n;
}

static int serve(unsigned port) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY};
  if (s < 0 || bind(s, (struct sockaddr*)&a, sizeof(a)) != 0 || listen(s, 1) != 0) {
    printf("linux-virtio: FAIL vsock listen on %u: %s\n", port, strerror(errno));
    return 1;
  }
  struct pollfd p = {s, POLLIN, 0};
  int c = poll(&p, 1, kTimeoutMs) == 1 ? accept(s, NULL, NULL) : -1;
  char line[128], reply[160];
  if (c < 0 || read_line(c, line, sizeof(line)) <= 0) {
    printf("linux-virtio: FAIL vsock: no line from the host on port %u\n", port);
    return 1;
  }
  int n = snprintf(reply, sizeof(reply), "echo: %s", line);
  if (write(c, reply, (size_t)n) != n) {
    printf("linux-virtio: FAIL vsock: reply to the host: %s\n", strerror(errno));
    return 1;
  }
  printf("linux-virtio: vsock served the host on port %u\n", port);
  close(c);
  return 0;
}

static int connect_host(unsigned port) {
  const char kHello[] = "hello from linux\n";
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_HOST};
  if (s < 0 || connect(s, (struct sockaddr*)&a, sizeof(a)) != 0) {
    printf("linux-virtio: FAIL vsock connect to host port %u: %s\n", port, strerror(errno));
    return 1;
  }
  char line[128];
  if (write(s, kHello, strlen(kHello)) != (ssize_t)strlen(kHello) ||
      read_line(s, line, sizeof(line)) <= 0 || strcmp(line, kHello) != 0) {
    printf("linux-virtio: FAIL vsock: host port %u did not echo our line\n", port);
    return 1;
  }
  printf("linux-virtio: vsock host port %u echoed our line\n", port);
  close(s);
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve((unsigned)atoi(argv[2]));
  if (argc == 3 && strcmp(argv[1], "connect") == 0) return connect_host((unsigned)atoi(argv[2]));
  fprintf(stderr, "usage: linux_vsock serve PORT | connect PORT\n");
  return 2;
}
