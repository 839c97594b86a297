// Host side of bench/net (plain C, built by run.sh with gcc -O2 -static).
//
//   netbench sink ADDR PORT WAIT_S
//       Binds a UDP socket to ADDR:PORT (8 MiB receive buffer), prints
//       `sink: ready`, then counts datagrams until none came for 2 s after
//       the first one (or none at all within WAIT_S). Prints
//       `sink: <n> datagrams, <bytes> bytes in <us> us: <x.xx> MB/s`, the
//       span measured from the first datagram to the last (MB = 10^6 bytes,
//       UDP payload bytes).
//   netbench blast ADDR PORT SECS LEN
//       Sends LEN-byte UDP datagrams to ADDR:PORT for SECS seconds as fast as
//       sendmmsg goes (sleeping 100 us whenever the TAP's queue is full, so
//       as not to take the CPU from the VMM). Prints `blast: <n> datagrams, <bytes> bytes sent in
//       <us> us: <x.xx> MB/s (<e> send errors)`.
//   netbench tap NAME SECS LEN PORT
//       The host's own limit for what a VMM does per guest frame: creates the
//       TAP NAME the way kindling does (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
//       12-byte header), waits until it is up with an IPv4 address, then
//       writes header + frame (UDP from 10.0.2.15 to the TAP's address,
//       port PORT, LEN bytes of payload) with one write(2) per frame for SECS
//       seconds. Prints `tap: <n> frames, <bytes> bytes written in <us> us`.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { kBatch = 64, kMaxLen = 65507 };

static uint64_t now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000 + (uint64_t)t.tv_nsec / 1000;
}

static void rate(char* buf, size_t n, uint64_t bytes, uint64_t us) {
  uint64_t x100 = us ? bytes * 100 / us : 0;
  snprintf(buf, n, "%llu.%02llu MB/s", (unsigned long long)(x100 / 100),
           (unsigned long long)(x100 % 100));
}

static int udp_addr(const char* addr, const char* port, struct sockaddr_in* a) {
  memset(a, 0, sizeof(*a));
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)atoi(port));
  return inet_pton(AF_INET, addr, &a->sin_addr) == 1 ? 0 : -1;
}

static int sink(const char* addr, const char* port, int wait_s) {
  struct sockaddr_in a;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  int big = 8 << 20;
  if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) != 0)
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  struct timeval tv = {0, 200000};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (udp_addr(addr, port, &a) || bind(s, (struct sockaddr*)&a, sizeof(a)) != 0) {
    printf("sink: cannot bind %s:%s: %s\n", addr, port, strerror(errno));
    return 1;
  }
  printf("sink: ready\n");
  fflush(stdout);
  static char bufs[kBatch][2048];
  struct mmsghdr m[kBatch];
  struct iovec iov[kBatch];
  uint64_t start = now_us(), first = 0, last = 0, n = 0, bytes = 0;
  for (;;) {
    for (int i = 0; i < kBatch; i++) {
      iov[i] = (struct iovec){bufs[i], sizeof(bufs[i])};
      memset(&m[i], 0, sizeof(m[i]));
      m[i].msg_hdr.msg_iov = &iov[i];
      m[i].msg_hdr.msg_iovlen = 1;
    }
    int r = recvmmsg(s, m, kBatch, MSG_WAITFORONE, NULL);
    uint64_t t = now_us();
    if (r > 0) {
      if (!n) first = t;
      last = t;
      n += (uint64_t)r;
      for (int i = 0; i < r; i++) bytes += m[i].msg_len;
      continue;
    }
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      printf("sink: recvmmsg: %s\n", strerror(errno));
      return 1;
    }
    if (n ? t - last > 2000000 : t - start > (uint64_t)wait_s * 1000000) break;
  }
  char r[32];
  rate(r, sizeof(r), bytes, last - first);
  printf("sink: %llu datagrams, %llu bytes in %llu us: %s\n", (unsigned long long)n,
         (unsigned long long)bytes, (unsigned long long)(last - first), r);
  return n ? 0 : 1;
}

static int blast(const char* addr, const char* port, int secs, int len) {
  struct sockaddr_in a;
  if (len < 1 || len > kMaxLen || udp_addr(addr, port, &a)) return 2;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  if (connect(s, (struct sockaddr*)&a, sizeof(a)) != 0) {
    printf("blast: connect %s:%s: %s\n", addr, port, strerror(errno));
    return 1;
  }
  static char payload[kMaxLen];
  for (int i = 0; i < len; i++) payload[i] = "kindling-bench-"[i % 15];
  struct mmsghdr m[kBatch];
  struct iovec iov = {payload, (size_t)len};
  memset(m, 0, sizeof(m));
  for (int i = 0; i < kBatch; i++) {
    m[i].msg_hdr.msg_iov = &iov;
    m[i].msg_hdr.msg_iovlen = 1;
  }
  uint64_t start = now_us(), end = start + (uint64_t)secs * 1000000, n = 0, errs = 0, t;
  while ((t = now_us()) < end) {
    int r = sendmmsg(s, m, kBatch, 0);
    if (r > 0) {
      n += (uint64_t)r;
    } else {
      errs++;  // the TAP's queue is full (ENOBUFS): let the VMM catch up
      usleep(100);
    }
  }
  char r[32];
  rate(r, sizeof(r), n * (uint64_t)len, t - start);
  printf("blast: %llu datagrams, %llu bytes sent in %llu us: %s (%llu send errors)\n",
         (unsigned long long)n, (unsigned long long)(n * (uint64_t)len),
         (unsigned long long)(t - start), r, (unsigned long long)errs);
  return 0;
}

static uint16_t csum(const uint8_t* p, int n) {
  uint32_t sum = 0;
  for (int i = 0; i + 1 < n; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static int tap(const char* name, int secs, int len, int port) {
  if (len < 18 || len > 1472) return 2;
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  int hdr = 12;
  if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) != 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) != 0) {
    printf("tap: cannot create %s: %s\n", name, strerror(errno));
    return 1;
  }
  printf("tap: ready\n");
  fflush(stdout);
  // Wait (10 s at most) until the script gave it an address and brought it up.
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct ifreq q;
  uint8_t tap_mac[6], tap_ip[4];
  for (int i = 0;; i++) {
    memset(&q, 0, sizeof(q));
    snprintf(q.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(s, SIOCGIFFLAGS, &q) == 0 && (q.ifr_flags & IFF_UP)) {
      memset(&q, 0, sizeof(q));
      snprintf(q.ifr_name, IFNAMSIZ, "%s", name);
      if (ioctl(s, SIOCGIFADDR, &q) == 0) {
        memcpy(tap_ip, &((struct sockaddr_in*)&q.ifr_addr)->sin_addr, 4);
        break;
      }
    }
    if (i == 1000) {
      printf("tap: %s never came up with an address\n", name);
      return 1;
    }
    usleep(10000);
  }
  memset(&q, 0, sizeof(q));
  snprintf(q.ifr_name, IFNAMSIZ, "%s", name);
  ioctl(s, SIOCGIFHWADDR, &q);
  memcpy(tap_mac, q.ifr_hwaddr.sa_data, 6);
  usleep(200000);
  static uint8_t f[12 + 1514];
  memset(f, 0, sizeof(f));
  uint8_t* e = f + 12;
  static const uint8_t src_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  memcpy(e, tap_mac, 6);
  memcpy(e + 6, src_mac, 6);
  e[12] = 0x08;
  uint8_t* ip = e + 14;
  ip[0] = 0x45;
  ip[2] = (uint8_t)((28 + len) >> 8);
  ip[3] = (uint8_t)(28 + len);
  ip[6] = 0x40;
  ip[8] = 64;
  ip[9] = 17;
  static const uint8_t src_ip[4] = {10, 0, 2, 15};
  memcpy(ip + 12, src_ip, 4);
  memcpy(ip + 16, tap_ip, 4);
  uint16_t c = csum(ip, 20);
  ip[10] = (uint8_t)(c >> 8);
  ip[11] = (uint8_t)c;
  uint8_t* udp = ip + 20;
  udp[0] = udp[2] = (uint8_t)(port >> 8);
  udp[1] = udp[3] = (uint8_t)port;
  udp[4] = (uint8_t)((8 + len) >> 8);
  udp[5] = (uint8_t)(8 + len);
  for (int i = 0; i < len; i++) udp[8 + i] = (uint8_t)"kindling-bench-"[i % 15];
  size_t total = 12 + 42 + (size_t)len;
  uint64_t start = now_us(), end = start + (uint64_t)secs * 1000000, n = 0, errs = 0, t;
  while ((t = now_us()) < end) {
    for (int i = 0; i < 64; i++) {
      if (write(fd, f, total) == (ssize_t)total) n++;
      else errs++;
    }
  }
  char r[32];
  rate(r, sizeof(r), n * (uint64_t)len, t - start);
  printf("tap: %llu frames, %llu bytes written in %llu us: %s (%llu errors)\n",
         (unsigned long long)n, (unsigned long long)(n * (uint64_t)len),
         (unsigned long long)(t - start), r, (unsigned long long)errs);
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 5 && !strcmp(argv[1], "sink")) return sink(argv[2], argv[3], atoi(argv[4]));
  if (argc == 6 && !strcmp(argv[1], "blast"))
    return blast(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
  if (argc == 6 && !strcmp(argv[1], "tap"))
    return tap(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
  fprintf(stderr,
          "usage: netbench sink ADDR PORT WAIT_S | blast ADDR PORT SECS LEN | "
          "tap NAME SECS LEN PORT\n");
  return 2;
}
