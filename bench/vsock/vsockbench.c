// Host side of bench/vsock (plain C, built by run.sh with gcc -O2 -static).
//
//   vsockbench sink unix PATH WAIT_S
//   vsockbench sink vsock PORT WAIT_S
//       Listens (on the Unix socket PATH: where kindling connects for a
//       guest connection to host port P when PATH is <uds>_P; or on
//       AF_VSOCK VMADDR_CID_ANY:PORT: vhost-vsock), prints `sink: ready`,
//       accepts one connection within WAIT_S and reads it to EOF. Prints
//       `sink: <bytes> bytes in <us> us: <x.xx> MB/s`, timed from the first
//       byte to EOF (MB = 10^6 bytes).
//   vsockbench send unix PATH PORT MIB
//   vsockbench send vsock CID PORT MIB
//       Connects (kindling: to its socket PATH with `CONNECT <PORT>\n`, then
//       expects `OK <n>\n`; vhost-vsock: to CID:PORT), retrying for 30 s
//       while nobody listens, writes MIB MiB in 64 KiB writes, shuts down
//       its sending side and waits for the peer to close. Prints `send:
//       <bytes> bytes in <us> us: <x.xx> MB/s`, timed from the first write
//       to the peer's close.
//   vsockbench copy MIB CHUNK
//       The host's own limit: MIB MiB through a Unix stream socket pair
//       from one process to another, CHUNK bytes per write(2) (a VMM writes
//       about one guest packet per call). Prints `copy: ...` like sink.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { kBuf = 256 * 1024, kWrite = 64 * 1024 };
static char buf[kBuf];

static uint64_t now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000 + (uint64_t)t.tv_nsec / 1000;
}

static void report(const char* who, uint64_t bytes, uint64_t us) {
  uint64_t x100 = us ? bytes * 100 / us : 0;
  printf("%s: %llu bytes in %llu us: %llu.%02llu MB/s\n", who, (unsigned long long)bytes,
         (unsigned long long)us, (unsigned long long)(x100 / 100),
         (unsigned long long)(x100 % 100));
}

static int make_socket(const char* kind, const char* where, unsigned cid, struct sockaddr_un* un,
                       struct sockaddr_vm* vm, struct sockaddr** a, socklen_t* len) {
  if (!strcmp(kind, "unix")) {
    memset(un, 0, sizeof(*un));
    un->sun_family = AF_UNIX;
    if (strlen(where) >= sizeof(un->sun_path)) return -1;
    strcpy(un->sun_path, where);
    *a = (struct sockaddr*)un;
    *len = sizeof(*un);
    return socket(AF_UNIX, SOCK_STREAM, 0);
  }
  if (!strcmp(kind, "vsock")) {
    memset(vm, 0, sizeof(*vm));
    vm->svm_family = AF_VSOCK;
    vm->svm_cid = cid;
    vm->svm_port = (unsigned)atoi(where);
    *a = (struct sockaddr*)vm;
    *len = sizeof(*vm);
    return socket(AF_VSOCK, SOCK_STREAM, 0);
  }
  return -1;
}

// Reads fd to EOF; returns bytes, *first = time of the first byte.
static uint64_t drain(int fd, uint64_t* first) {
  uint64_t total = 0;
  *first = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof(buf));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (!total) *first = now_us();
    total += (uint64_t)r;
  }
  return total;
}

static int sink(const char* kind, const char* where, int wait_s) {
  struct sockaddr_un un;
  struct sockaddr_vm vm;
  struct sockaddr* a;
  socklen_t len;
  int s = make_socket(kind, where, VMADDR_CID_ANY, &un, &vm, &a, &len);
  if (!strcmp(kind, "unix")) unlink(where);
  if (s < 0 || bind(s, a, len) != 0 || listen(s, 1) != 0) {
    printf("sink: cannot listen on %s %s: %s\n", kind, where, strerror(errno));
    return 1;
  }
  printf("sink: ready\n");
  struct pollfd p = {s, POLLIN, 0};
  if (poll(&p, 1, wait_s * 1000) != 1) {
    printf("sink: nobody connected within %d s\n", wait_s);
    return 1;
  }
  int c = accept(s, NULL, NULL);
  if (c < 0) {
    printf("sink: accept: %s\n", strerror(errno));
    return 1;
  }
  uint64_t first, total = drain(c, &first), end = now_us();
  report("sink", total, total ? end - first : 0);
  if (!strcmp(kind, "unix")) unlink(where);
  return total ? 0 : 1;
}

static int send_all(int fd, const char* p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int sender(const char* kind, const char* where, unsigned cid, unsigned port, int mib) {
  struct sockaddr_un un;
  struct sockaddr_vm vm;
  struct sockaddr* a;
  socklen_t len;
  int s = -1;
  uint64_t give_up = now_us() + 30000000;
  for (;;) {
    s = make_socket(kind, where, cid, &un, &vm, &a, &len);
    if (s < 0) {
      printf("send: socket %s: %s\n", kind, strerror(errno));
      return 1;
    }
    if (connect(s, a, len) == 0) {
      if (strcmp(kind, "unix")) break;
      // kindling: the CONNECT line, then `OK <n>` once the guest accepted.
      char line[64];
      snprintf(line, sizeof(line), "CONNECT %u\n", port);
      size_t n = 0;
      if (send_all(s, line, strlen(line)) == 0) {
        while (n + 1 < sizeof(line) && read(s, line + n, 1) == 1 && line[n++] != '\n') {
        }
      }
      line[n] = 0;
      if (!strncmp(line, "OK ", 3)) break;
    }
    close(s);
    if (now_us() > give_up) {
      printf("send: could not connect to %s %s port %u\n", kind, where, port);
      return 1;
    }
    usleep(50000);
  }
  for (int i = 0; i < kWrite; i++) buf[i] = "kindling-bench-"[i % 15];
  uint64_t total = (uint64_t)mib << 20, sent = 0, t0 = now_us();
  while (sent < total) {
    size_t n = total - sent < kWrite ? (size_t)(total - sent) : kWrite;
    if (send_all(s, buf, n) != 0) {
      printf("send: write failed after %llu bytes: %s\n", (unsigned long long)sent,
             strerror(errno));
      return 1;
    }
    sent += n;
  }
  uint64_t written = now_us();
  shutdown(s, SHUT_WR);
  uint64_t first;
  drain(s, &first);  // until the guest closes
  uint64_t end = now_us();
  report("send", sent, end - t0);
  printf("send: last write returned after %llu us\n", (unsigned long long)(written - t0));
  return 0;
}

static int copy(int mib, int chunk) {
  if (chunk < 1 || chunk > kWrite) return 2;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 1;
  pid_t pid = fork();
  if (pid == 0) {
    close(sv[0]);
    uint64_t first, total = drain(sv[1], &first), end = now_us();
    report("copy", total, end - first);
    _exit(0);
  }
  close(sv[1]);
  static char out[kWrite];
  memset(out, 'k', sizeof(out));
  uint64_t total = (uint64_t)mib << 20;
  for (uint64_t sent = 0; sent < total;) {
    size_t n = total - sent < (uint64_t)chunk ? (size_t)(total - sent) : (size_t)chunk;
    if (send_all(sv[0], out, n) != 0) return 1;
    sent += n;
  }
  close(sv[0]);
  int st;
  waitpid(pid, &st, 0);
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);  // a peer that closes early is an error return, not a kill
  if (argc == 5 && !strcmp(argv[1], "sink")) return sink(argv[2], argv[3], atoi(argv[4]));
  if (argc == 6 && !strcmp(argv[1], "send") && !strcmp(argv[2], "unix"))
    return sender("unix", argv[3], 0, (unsigned)atoi(argv[4]), atoi(argv[5]));
  if (argc == 6 && !strcmp(argv[1], "send") && !strcmp(argv[2], "vsock"))
    return sender("vsock", argv[4], (unsigned)atoi(argv[3]), (unsigned)atoi(argv[4]),
                  atoi(argv[5]));
  if (argc == 4 && !strcmp(argv[1], "copy")) return copy(atoi(argv[2]), atoi(argv[3]));
  fprintf(stderr,
          "usage: vsockbench sink unix|vsock PATH|PORT WAIT_S | send unix PATH PORT MIB |\n"
          "       send vsock CID PORT MIB | copy MIB CHUNK\n");
  return 2;
}
