// virtio_net: the first virtio-net device (ID 1) on a tiny IPv4 stack:
// ARP for the peer, ping it, and answer ARP and ICMP echo requests for our
// own address meanwhile (so a host can ping the guest).
//
// Command line switches:
//   net.ip=A.B.C.D     our address (10.0.2.15: QEMU user networking's guest)
//   net.peer=A.B.C.D   who to ARP for and ping (10.0.2.2: its gateway)
//   net.serve_ms=N     after the ping, keep answering ARP / echo requests
//                      for N ms (0)
//   net.timeout_ms=N   how long to wait for the ARP reply, and again for
//                      the echo reply (5000); requests are resent every 1 s
//   net.mrg_rxbuf=0|1  negotiate VIRTIO_NET_F_MRG_RXBUF when offered (1)
//   net.csum=0|1       negotiate VIRTIO_NET_F_CSUM and GUEST_CSUM when
//                      offered (1); the guest fills in every checksum itself
//                      either way and never asks for an offload
//   net.bench_secs=N   throughput, guest -> peer: after the ping, send UDP
//                      datagrams to the peer's port net.bench_port (5001)
//                      for N seconds, keeping the transmit ring full, and
//                      report frames, bytes and MB/s (10^6 bytes/s, TSC)
//   net.bench_len=N    UDP payload bytes per datagram (1472: 1514-byte
//                      frames)
//   net.bench_rx_secs=N  throughput, peer -> guest: count the UDP datagrams
//                      to our port net.bench_port for N seconds from the
//                      first one (or until none came for 2 s), and report
//                      them the same way; the first must come within
//                      net.bench_wait_ms (30000)
//   net.event_idx=0|1  negotiate VIRTIO_F_EVENT_IDX when offered (0)
//
// Layout (spec 5.1): receiveq1 = queue 0, transmitq1 = queue 1; every
// buffer starts with the 12-byte struct virtio_net_hdr (VERSION_1). Receive
// buffers are single 2048-byte device-writable descriptors (>= 12 + 1514);
// a transmit is a 2-descriptor chain, header then frame. With MRG_RXBUF a
// received frame must report num_buffers >= 1 (more than 1 is dropped, the
// extra buffers consumed); without it num_buffers must be 0 or 1.
//
// Runs in ring 3 with interrupts on, like virtio_blk.
#include "virtio.h"

#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_MRG_RXBUF 15

#define NET_HDR_F_NEEDS_CSUM 1
#define NET_HDR_F_DATA_VALID 2
#define NET_HDR_GSO_NONE 0

struct virtio_net_hdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};
_Static_assert(sizeof(struct virtio_net_hdr) == 12, "virtio_net_hdr");

#define HDR_LEN 12
#define RX_BUF 2048
#define MAX_FRAME 1514
#define MIN_FRAME 60  // without the FCS
#define RX_Q 0
#define TX_Q 1

#define ETH_ARP 0x0806
#define ETH_IP 0x0800
#define ARP_REQUEST 1
#define ARP_REPLY 2
#define IP_ICMP 1
#define IP_UDP 17
#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8
#define PING_ID 0x4b4e  // "KN"
#define PING_SEQ 1
#define PING_PAYLOAD 56

static struct virtio_dev* dev;
static struct virtq* rxq;
static struct virtq* txq;
static int mrg_rxbuf;
static uint8_t mac[6];
static uint8_t my_ip[4], peer_ip[4];
static uint8_t peer_mac[6];
static int have_peer_mac, ping_ok;
static char* rx_bufs;  // RX_BUF per descriptor index
static uint8_t* tx_buf;  // header + frame
static uint32_t tx_frames, rx_frames, served, dropped;
static uint16_t bench_port;
static uint64_t bench_rx_frames, bench_rx_bytes, bench_rx_first, bench_rx_last;
static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// ---- helpers ----

static uint16_t get16(const uint8_t* p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t* p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

// Internet checksum (RFC 1071) over n bytes.
static uint16_t inet_csum(const uint8_t* p, uint32_t n) {
  uint32_t sum = 0;
  for (uint32_t i = 0; i + 1 < n; i += 2) sum += get16(p + i);
  if (n & 1) sum += (uint32_t)p[n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static void parse_ip(const char* key, const char* dflt, uint8_t ip[4]) {
  char s[32];
  if (!cmdline_str(key, s, sizeof(s))) memcpy(s, dflt, strlen(dflt) + 1);
  const char* p = s;
  for (int i = 0; i < 4; i++) {
    uint32_t v = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 4) v = v * 10 + (uint32_t)(*p++ - '0'), digits++;
    if (!digits || v > 255 || (i < 3 ? *p != '.' : *p != '\0'))
      fail("virtio-net: %s=%s is not an IPv4 address", key, s);
    ip[i] = (uint8_t)v;
    p++;
  }
}

static void fmt_ip(char* b, size_t n, const uint8_t ip[4]) {
  snprintf(b, n, "%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
}
static void fmt_mac(char* b, size_t n, const uint8_t m[6]) {
  snprintf(b, n, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3],
           m[4], m[5]);
}

static uint64_t ms_deadline(uint32_t ms) { return rdtsc() + tsc_per_ms() * ms; }

// ---- queues ----

static void post_rx(int index) {
  struct vbuf b = {(uint64_t)(rx_bufs + (uint64_t)index * RX_BUF), RX_BUF, 1};
  int head = vq_submit(rxq, &b, 1, 0);
  // Single-descriptor chains: the free list hands back the index just freed.
  if (head != index) fail("virtio-net: rx buffer %d came back as head %d", index, head);
}

// Sends one frame of `len` bytes from tx_buf + HDR_LEN (padded to 60) and
// waits for the device to take it.
static void transmit(uint32_t len) {
  if (len < MIN_FRAME) {
    memset(tx_buf + HDR_LEN + len, 0, MIN_FRAME - len);
    len = MIN_FRAME;
  }
  memset(tx_buf, 0, HDR_LEN);  // no offload: flags 0, GSO_NONE
  struct vbuf b[2] = {{(uint64_t)tx_buf, HDR_LEN, 0},
                      {(uint64_t)(tx_buf + HDR_LEN), len, 0}};
  int head = vq_submit(txq, b, 2, 0);
  if (head < 0) fail("virtio-net: no transmit ring space");
  vq_kick(txq);
  uint32_t used;
  if (vq_wait(txq, head, &used, 5000)) fail("virtio-net: transmit timed out");
  tx_frames++;
}

static uint8_t* tx_frame(const uint8_t* dst, uint16_t type) {
  uint8_t* f = tx_buf + HDR_LEN;
  memcpy(f, dst, 6);
  memcpy(f + 6, mac, 6);
  put16(f + 12, type);
  return f + 14;
}

// ---- ARP (RFC 826) ----

static void send_arp(uint16_t op, const uint8_t* dst_mac, const uint8_t* tha,
                     const uint8_t* tpa) {
  uint8_t* a = tx_frame(dst_mac, ETH_ARP);
  put16(a, 1);  // Ethernet
  put16(a + 2, ETH_IP);
  a[4] = 6;
  a[5] = 4;
  put16(a + 6, op);
  memcpy(a + 8, mac, 6);
  memcpy(a + 14, my_ip, 4);
  memcpy(a + 18, tha, 6);
  memcpy(a + 24, tpa, 4);
  transmit(14 + 28);
}

static void handle_arp(const uint8_t* a, uint32_t len) {
  if (len < 28 || get16(a) != 1 || get16(a + 2) != ETH_IP || a[4] != 6 || a[5] != 4)
    return;
  uint16_t op = get16(a + 6);
  const uint8_t *sha = a + 8, *spa = a + 14, *tpa = a + 24;
  if (op == ARP_REQUEST && !memcmp(tpa, my_ip, 4)) {
    send_arp(ARP_REPLY, sha, sha, spa);
  } else if (op == ARP_REPLY && !memcmp(spa, peer_ip, 4) && !have_peer_mac) {
    memcpy(peer_mac, sha, 6);
    have_peer_mac = 1;
  }
}

// ---- IPv4 / ICMP ----

static uint8_t* ip_header(const uint8_t* dst_mac, const uint8_t* dst_ip,
                          uint16_t payload) {
  static uint16_t ip_id = 1;
  uint8_t* ip = tx_frame(dst_mac, ETH_IP);
  memset(ip, 0, 20);
  ip[0] = 0x45;
  put16(ip + 2, (uint16_t)(20 + payload));
  put16(ip + 4, ip_id++);
  ip[8] = 64;  // TTL
  ip[9] = IP_ICMP;
  memcpy(ip + 12, my_ip, 4);
  memcpy(ip + 16, dst_ip, 4);
  put16(ip + 10, inet_csum(ip, 20));
  return ip + 20;
}

static void fill_payload(uint8_t* p) {
  for (int i = 0; i < PING_PAYLOAD; i++) p[i] = (uint8_t)("kindling-net-ping-"[i % 18] + i / 18);
}

static void send_ping(void) {
  uint8_t* icmp = ip_header(peer_mac, peer_ip, 8 + PING_PAYLOAD);
  icmp[0] = ICMP_ECHO_REQUEST;
  icmp[1] = 0;
  put16(icmp + 2, 0);
  put16(icmp + 4, PING_ID);
  put16(icmp + 6, PING_SEQ);
  fill_payload(icmp + 8);
  put16(icmp + 2, inet_csum(icmp, 8 + PING_PAYLOAD));
  transmit(14 + 20 + 8 + PING_PAYLOAD);
}

static void handle_icmp(const uint8_t* eth, const uint8_t* ip, const uint8_t* icmp,
                        uint32_t len, int csum_partial) {
  if (len < 8) return;
  if (!csum_partial && inet_csum(icmp, len) != 0) {
    dropped++;
    return;
  }
  if (icmp[0] == ICMP_ECHO_REQUEST && icmp[1] == 0) {
    if (len > MAX_FRAME - 34) return;
    uint8_t* r = ip_header(eth + 6, ip + 12, (uint16_t)len);
    memcpy(r, icmp, len);
    r[0] = ICMP_ECHO_REPLY;
    put16(r + 2, 0);
    put16(r + 2, inet_csum(r, len));
    transmit(14 + 20 + len);
    served++;
  } else if (icmp[0] == ICMP_ECHO_REPLY && !memcmp(ip + 12, peer_ip, 4) &&
             get16(icmp + 4) == PING_ID && get16(icmp + 6) == PING_SEQ) {
    uint8_t want[PING_PAYLOAD];
    fill_payload(want);
    if (len != 8 + PING_PAYLOAD || memcmp(icmp + 8, want, PING_PAYLOAD))
      fail("virtio-net: echo reply from the peer with a wrong payload (%u bytes)", len);
    ping_ok = 1;
  }
}

static void handle_ip(const uint8_t* eth, const uint8_t* ip, uint32_t len,
                      int csum_partial) {
  if (len < 20 || (ip[0] >> 4) != 4) return;
  uint32_t ihl = (ip[0] & 15u) * 4, total = get16(ip + 2);
  if (ihl < 20 || total < ihl || total > len || inet_csum(ip, ihl) != 0) {
    dropped++;
    return;
  }
  if (memcmp(ip + 16, my_ip, 4) || (get16(ip + 6) & 0x3fff)) return;  // not ours, or a fragment
  if (ip[9] == IP_ICMP) handle_icmp(eth, ip, ip + ihl, total - ihl, csum_partial);
  if (ip[9] == IP_UDP && bench_port && total - ihl >= 8 && get16(ip + ihl + 2) == bench_port) {
    bench_rx_last = rdtsc();
    if (!bench_rx_frames) bench_rx_first = bench_rx_last;
    bench_rx_frames++;
    bench_rx_bytes += get16(ip + ihl + 4) - 8u;  // UDP payload
  }
}

// ---- receive ----

static void handle_frame(const uint8_t* buf, uint32_t len) {
  const struct virtio_net_hdr* h = (const struct virtio_net_hdr*)buf;
  rx_frames++;
  const uint8_t* eth = buf + HDR_LEN;
  len -= HDR_LEN;
  if (len < 14) {
    dropped++;
    return;
  }
  if (memcmp(eth, mac, 6) && memcmp(eth, broadcast, 6)) return;  // not for us
  uint16_t type = get16(eth + 12);
  if (type == ETH_ARP)
    handle_arp(eth + 14, len - 14);
  else if (type == ETH_IP)
    handle_ip(eth, eth + 14, len - 14, h->flags & NET_HDR_F_NEEDS_CSUM);
}

// Handles the received frames pending (at most a queue's worth), gives
// their buffers back and notifies once; returns how many.
static int poll_rx(void) {
  int n = 0;
  while (n < rxq->size) {
    uint32_t len;
    int head = vq_next_used(rxq, &len);
    if (head < 0) break;
    n++;
    const uint8_t* buf = (const uint8_t*)rx_bufs + (uint64_t)head * RX_BUF;
    if (len < HDR_LEN)
      fail("virtio-net: received buffer of %u bytes, shorter than the header", len);
    uint16_t nbuf = ((const struct virtio_net_hdr*)buf)->num_buffers;
    if (mrg_rxbuf ? nbuf == 0 : nbuf > 1)
      fail("virtio-net: num_buffers %u with mrg_rxbuf %s", nbuf, mrg_rxbuf ? "on" : "off");
    if (nbuf > 1) {
      // A frame spread over nbuf buffers: bigger than we ever send or
      // expect. Drop it, consuming the rest of its buffers.
      if (nbuf > rxq->size)
        fail("virtio-net: num_buffers %u beyond the queue size %u", nbuf, rxq->size);
      post_rx(head);
      for (uint16_t k = 1; k < nbuf; k++) {
        uint64_t deadline = ms_deadline(1000);
        int h2;
        while ((h2 = vq_next_used(rxq, &len)) < 0)
          if (rdtsc() > deadline) fail("virtio-net: buffer %u of %u of a merged frame missing", k + 1, nbuf);
        post_rx(h2);
      }
      rx_frames++;
      dropped++;
      continue;
    }
    handle_frame(buf, len);
    post_rx(head);
  }
  if (n) vq_kick(rxq);
  return n;
}

// Polls until *flag is set or ms pass; 0 on success.
static int wait_for(int* flag, uint32_t ms) {
  uint64_t deadline = ms_deadline(ms);
  while (!*flag) {
    if (!poll_rx()) cpu_relax();
    if (rdtsc() > deadline) return -1;
  }
  return 0;
}

// Sends with `send` every second until *flag or timeout_ms.
static int exchange(void (*send)(void), int* flag, uint32_t timeout_ms) {
  uint64_t deadline = ms_deadline(timeout_ms);
  while (!*flag) {
    send();
    if (!wait_for(flag, 1000)) return 0;
    if (rdtsc() > deadline) return -1;
  }
  return 0;
}

static void send_arp_request(void) {
  static const uint8_t zero[6];
  send_arp(ARP_REQUEST, broadcast, zero, peer_ip);
}

// ---- throughput ----

// TSC ticks per ms for the bench: kvmclock's exact figure, else the
// APIC-timer measurement.
static uint64_t bench_tpm(void) {
  uint64_t k = tsc_per_ms_kvmclock();
  return k ? k : tsc_per_ms();
}
static uint64_t tsc_to_us(uint64_t ticks) { return ticks * 1000 / bench_tpm(); }

// "virtio-net: bench <what> <n> frames, <b> bytes in <ms> ms: <x.yy> MB/s"
// (bytes are UDP payload; MB = 10^6 bytes).
static void print_rate(const char* what, uint64_t frames, uint64_t bytes, uint64_t us) {
  uint64_t x100 = us ? bytes * 100 / us : 0;
  printf("virtio-net: bench %s %lu frames, %lu bytes in %lu ms: %lu.%02lu MB/s\n", what, frames,
         bytes, us / 1000, x100 / 100, x100 % 100);
}

// Guest -> peer: UDP datagrams of `payload` bytes to peer:bench_port for
// `secs` seconds. The transmit ring is kept full (one descriptor per frame,
// virtio header and frame together, prepared once per slot); completions
// are polled, interrupts suppressed. Two descriptors stay free for ARP or
// echo replies that transmit() may send meanwhile.
static void bench_tx(uint32_t secs, uint32_t payload) {
  if (payload < 18 || payload > MAX_FRAME - 42)
    fail("virtio-net: net.bench_len=%u is not between 18 and %u", payload, MAX_FRAME - 42);
  uint32_t flen = 42 + payload, slot = (HDR_LEN + flen + 63) & ~63u;
  uint8_t* slots = dma_alloc((uint64_t)slot * txq->size, 4096);
  for (int i = 0; i < txq->size; i++) {
    uint8_t* f = slots + (uint64_t)i * slot + HDR_LEN;  // header: all zero
    memcpy(f, peer_mac, 6);
    memcpy(f + 6, mac, 6);
    put16(f + 12, ETH_IP);
    uint8_t* ip = f + 14;
    ip[0] = 0x45;
    put16(ip + 2, (uint16_t)(28 + payload));
    put16(ip + 6, 0x4000);  // DF
    ip[8] = 64;
    ip[9] = IP_UDP;
    memcpy(ip + 12, my_ip, 4);
    memcpy(ip + 16, peer_ip, 4);
    put16(ip + 10, inet_csum(ip, 20));
    uint8_t* udp = ip + 20;
    put16(udp, bench_port);
    put16(udp + 2, bench_port);
    put16(udp + 4, (uint16_t)(8 + payload));  // checksum 0: none
    for (uint32_t k = 0; k < payload; k++) udp[8 + k] = (uint8_t)("kindling-bench-"[k % 15]);
  }
  printf("virtio-net: bench tx to port %u for %u s, %u-byte datagrams, tsc %lu kHz (%s)\n",
         bench_port, secs, payload, bench_tpm(),
         tsc_per_ms_kvmclock() ? "kvmclock" : "apic timer");
  vq_set_interrupts(txq, 0);
  uint32_t start = txq->completed, submitted = 0, notifies = txq->notifies;
  uint64_t t0 = rdtsc(), end = t0 + bench_tpm() * 1000 * secs;
  while (rdtsc() < end) {
    vq_collect(txq);
    uint32_t k = 0;
    while (txq->num_free > 2) {
      int i = txq->free_head;
      struct vbuf b = {(uint64_t)(slots + (uint64_t)i * slot), HDR_LEN + flen, 0};
      if (vq_submit(txq, &b, 1, 0) != i) fail("virtio-net: tx slot %d came back elsewhere", i);
      k++;
    }
    submitted += k;
    if (k) vq_kick(txq);
    else cpu_relax();
  }
  uint64_t deadline = ms_deadline(5000);
  while ((uint32_t)(txq->completed - start) < submitted) {
    vq_collect(txq);
    if (rdtsc() > deadline) fail("virtio-net: bench tx: frames still in flight after 5 s");
    cpu_relax();
  }
  uint64_t us = tsc_to_us(rdtsc() - t0);
  vq_set_interrupts(txq, 1);
  tx_frames += submitted;
  print_rate("tx", submitted, (uint64_t)submitted * payload, us);
  printf("virtio-net: bench tx %u notifies\n", txq->notifies - notifies);
}

// Peer -> guest: counts UDP datagrams to our bench_port (handle_ip) for
// `secs` seconds from the first, or until none came for 2 s; interrupts
// suppressed, the receive ring polled. Reports the span first..last.
static void bench_rx(uint32_t secs, uint32_t wait_ms) {
  vq_set_interrupts(rxq, 0);
  bench_rx_frames = bench_rx_bytes = 0;
  printf("virtio-net: bench rx on port %u for %u s\n", bench_port, secs);
  uint64_t first_deadline = ms_deadline(wait_ms), idle = bench_tpm() * 2000,
           span = bench_tpm() * 1000 * secs;
  for (;;) {
    int n = poll_rx();
    uint64_t now = rdtsc();
    if (bench_rx_frames) {
      if (now - bench_rx_first >= span || now - bench_rx_last >= idle) break;
    } else if (now > first_deadline) {
      fail("virtio-net: bench rx: no datagram to port %u within %u ms", bench_port, wait_ms);
    }
    if (!n) cpu_relax();
  }
  vq_set_interrupts(rxq, 1);
  print_rate("rx", bench_rx_frames, bench_rx_bytes, tsc_to_us(bench_rx_last - bench_rx_first));
}

// ---- setup ----

static void setup(void) {
  dev = virtio_find(VIRTIO_ID_NET, 0);
  if (!dev) fail("virtio-net: no device (cmdline: %s)", boot_cmdline());
  uint64_t want = VF(VIRTIO_NET_F_MAC);
  if (cmdline_int("net.mrg_rxbuf", 1)) want |= VF(VIRTIO_NET_F_MRG_RXBUF);
  if (cmdline_int("net.event_idx", 0)) want |= VF(VIRTIO_F_EVENT_IDX);
  if (cmdline_int("net.csum", 1))
    want |= VF(VIRTIO_NET_F_CSUM) | VF(VIRTIO_NET_F_GUEST_CSUM);
  virtio_begin(dev, want);
  virtio_setup_queue(dev, RX_Q);
  virtio_setup_queue(dev, TX_Q);
  virtio_driver_ok(dev);
  rxq = &dev->vq[RX_Q];
  txq = &dev->vq[TX_Q];
  mrg_rxbuf = virtio_has(dev, VIRTIO_NET_F_MRG_RXBUF);
  char where[48], s[32];
  virtio_where(dev, where, sizeof(where));
  printf("virtio-net: %s, queue sizes %u/%u\n", where, rxq->size, txq->size);
  printf("virtio-net: mrg_rxbuf %s, csum %s, guest_csum %s\n",
         mrg_rxbuf ? "on" : "off",
         virtio_has(dev, VIRTIO_NET_F_CSUM) ? "on" : "off",
         virtio_has(dev, VIRTIO_NET_F_GUEST_CSUM) ? "on" : "off");
  if (virtio_has(dev, VIRTIO_NET_F_MAC)) {
    for (int i = 0; i < 6; i++) mac[i] = virtio_cfg8(dev, (uint32_t)i);
    fmt_mac(s, sizeof(s), mac);
    printf("virtio-net: mac %s\n", s);
  } else {
    static const uint8_t local[6] = {0x02, 0x6b, 0x6e, 0x00, 0x00, 0x01};
    memcpy(mac, local, 6);
    fmt_mac(s, sizeof(s), mac);
    printf("virtio-net: mac %s (no VIRTIO_NET_F_MAC, locally administered)\n", s);
  }
  if (mac[0] & 1) fail("virtio-net: the device's mac %s is a multicast address", s);
  rx_bufs = dma_alloc((uint64_t)RX_BUF * rxq->size, 4096);
  tx_buf = dma_alloc(HDR_LEN + RX_BUF, 64);
  for (int i = 0; i < rxq->size; i++) post_rx(i);
  vq_kick(rxq);
}

static long net_main(long unused) {
  (void)unused;
  parse_ip("net.ip", "10.0.2.15", my_ip);
  parse_ip("net.peer", "10.0.2.2", peer_ip);
  uint32_t timeout = (uint32_t)cmdline_int("net.timeout_ms", 5000);
  uint32_t serve_ms = (uint32_t)cmdline_int("net.serve_ms", 0);
  setup();
  char a[20], b[20], m[24];
  fmt_ip(a, sizeof(a), my_ip);
  fmt_ip(b, sizeof(b), peer_ip);
  printf("virtio-net: ip %s, peer %s\n", a, b);
  if (exchange(send_arp_request, &have_peer_mac, timeout))
    fail("virtio-net: no arp reply from %s within %u ms", b, timeout);
  fmt_mac(m, sizeof(m), peer_mac);
  printf("virtio-net: arp reply from %s is %s\n", b, m);
  if (exchange(send_ping, &ping_ok, timeout))
    fail("virtio-net: no echo reply from %s within %u ms", b, timeout);
  printf("virtio-net: ping %s ok\n", b);
  if (serve_ms) {
    printf("virtio-net: serving for %u ms\n", serve_ms);
    int never = 0;
    wait_for(&never, serve_ms);
  }
  uint32_t bench_secs = (uint32_t)cmdline_int("net.bench_secs", 0);
  uint32_t bench_rx_secs = (uint32_t)cmdline_int("net.bench_rx_secs", 0);
  bench_port = (uint16_t)cmdline_int("net.bench_port", 5001);
  if (bench_secs) bench_tx(bench_secs, (uint32_t)cmdline_int("net.bench_len", 1472));
  if (bench_rx_secs) bench_rx(bench_rx_secs, (uint32_t)cmdline_int("net.bench_wait_ms", 30000));
  if (bench_secs || bench_rx_secs) dev->quiet_ok = 1;  // interrupts were off on purpose
  printf("virtio-net: served %u echo requests\n", served);
  printf("virtio-net: %u frames sent, %u received\n", tx_frames, rx_frames);
  if (dropped) printf("virtio-net: %u frames dropped (bad checksum or length)\n", dropped);
  virtio_report_irqs(dev, "virtio-net");
  if (virtio_status(dev) & VIRTIO_STATUS_NEEDS_RESET)
    fail("virtio-net: device needs reset (status %#x)", virtio_status(dev));
  printf("virtio-net: ok\n");
  return 0;
}

int main(void) {
  virtio_discover();
  tsc_per_ms();
  tsc_per_ms_kvmclock();
  return (int)run_user(net_main, 0, /*interrupts=*/1);
}
