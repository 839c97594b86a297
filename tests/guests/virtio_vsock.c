// virtio_vsock: the first virtio-vsock device (ID 19), stream sockets
// (spec 5.10) with the host (CID 2).
//
// Command line switches:
//   vsock.listen=P    wait for the host to connect to our port P, read one
//                     line, write it back prefixed with "echo: ", close
//   vsock.connect=P   connect to the host's port P, send "hello from the
//                     guest over vsock\n", read one line back (the host
//                     echoes), check it, close
//   vsock.wait_ms=N   how long to wait for the host's connection (10000)
//   vsock.timeout_ms=N  every other wait: the response, a line, credit (5000)
//   vsock.local_port=P  our port for vsock.connect (49152)
//   vsock.bench_port=P  throughput, guest -> host: connect to host port P,
//                     send vsock.bench_mib MiB (64) in packets of up to
//                     vsock.bench_pkt payload bytes (4096, at most 65536)
//                     as fast as the host's credit allows, keeping the
//                     transmit ring full (header and payload in one
//                     descriptor), and report bytes and MB/s (10^6 bytes/s,
//                     TSC); then close
//   vsock.bench_rx_port=P  throughput, host -> guest: listen on port P, count
//                     what the host sends until it shuts down (or 2 s of
//                     silence), returning credit as it goes, and report it
//                     the same way
//   vsock.event_idx=0|1  negotiate VIRTIO_F_EVENT_IDX when offered (0)
// With both switches the guest serves (listen) first, then connects; with
// neither it prints the CID and stops there.
//
// Queues: rx 0, tx 1, event 2. Receive buffers are single 44 + 4096-byte
// device-writable descriptors (header, then payload); transmits are a
// header descriptor plus, for RW, a payload descriptor. Credit: we
// advertise buf_alloc 65536 and fwd_cnt = bytes received (the guest
// consumes at once); we send only within the peer's buf_alloc - (tx_cnt -
// fwd_cnt), asking with CREDIT_REQUEST when it is short, and answer
// CREDIT_REQUEST with CREDIT_UPDATE. Closing: SHUTDOWN (both directions),
// then wait for the peer's RST (2 s), else send RST. A TRANSPORT_RESET
// event is a FAIL.
//
// Runs in ring 3 with interrupts on, like virtio_blk.
#include "virtio.h"

#define VIRTIO_VSOCK_F_STREAM 0

#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define OP_CREDIT_REQUEST 7
#define TYPE_STREAM 1
#define SHUTDOWN_RCV 1
#define SHUTDOWN_SEND 2
#define EVENT_TRANSPORT_RESET 0
#define HOST_CID 2

struct vsock_hdr {
  uint64_t src_cid;
  uint64_t dst_cid;
  uint32_t src_port;
  uint32_t dst_port;
  uint32_t len;
  uint16_t type;
  uint16_t op;
  uint32_t flags;
  uint32_t buf_alloc;
  uint32_t fwd_cnt;
} __attribute__((packed));
_Static_assert(sizeof(struct vsock_hdr) == 44, "virtio_vsock_hdr");

#define HDR 44
#define RX_PAYLOAD 4096
#define RX_BUF (HDR + RX_PAYLOAD)
#define BUF_ALLOC 65536
#define LINE_MAX 1024
#define NEVENTS 4
#define RX_Q 0
#define TX_Q 1
#define EVENT_Q 2
#define MESSAGE "hello from the guest over vsock\n"

enum { CLOSED, CONNECTING, LISTENING, CONNECTED };

struct conn {
  int state;
  uint32_t local_port, peer_port;
  uint32_t peer_buf_alloc, peer_fwd_cnt;
  uint32_t tx_cnt;  // payload bytes sent
  uint32_t rx_cnt;  // payload bytes received (= consumed: our fwd_cnt)
  uint32_t peer_shutdown;  // SHUTDOWN_* bits the peer sent
  int got_rst;
  uint32_t reported_fwd;  // the fwd_cnt we last sent
  char line[LINE_MAX];
  uint32_t line_len;
  int line_done;
};

static struct virtio_dev* dev;
static struct virtq *rxq, *txq, *evq;
static uint64_t guest_cid;
static char* rx_bufs;
static uint32_t* events;
static struct vsock_hdr* tx_hdr;
static char* tx_data;
static struct conn c;
static uint32_t timeout_ms;
// Bench receive: RW payload is counted, not kept (first and last arrival).
static int bench_counting;
static uint64_t bench_first, bench_last;

static uint64_t ms_deadline(uint32_t ms) { return rdtsc() + tsc_per_ms() * ms; }

// ---- transmit ----

static void send_pkt(uint16_t op, uint32_t flags, uint32_t src_port, uint32_t dst_port,
                     const void* data, uint32_t len) {
  tx_hdr->src_cid = guest_cid;
  tx_hdr->dst_cid = HOST_CID;
  tx_hdr->src_port = src_port;
  tx_hdr->dst_port = dst_port;
  tx_hdr->len = len;
  tx_hdr->type = TYPE_STREAM;
  tx_hdr->op = op;
  tx_hdr->flags = flags;
  tx_hdr->buf_alloc = BUF_ALLOC;
  tx_hdr->fwd_cnt = c.rx_cnt;
  c.reported_fwd = c.rx_cnt;
  struct vbuf b[2] = {{(uint64_t)tx_hdr, HDR, 0}, {(uint64_t)tx_data, len, 0}};
  if (len) memcpy(tx_data, data, len);
  int head = vq_submit(txq, b, len ? 2 : 1, 0);
  if (head < 0) fail("virtio-vsock: no transmit ring space");
  vq_kick(txq);
  if (vq_wait(txq, head, NULL, 5000)) fail("virtio-vsock: transmit (op %u) timed out", op);
}

static void send_ctl(uint16_t op, uint32_t flags) {
  send_pkt(op, flags, c.local_port, c.peer_port, NULL, 0);
}

// ---- receive ----

static void post_rx(int index) {
  struct vbuf b = {(uint64_t)(rx_bufs + (uint64_t)index * RX_BUF), RX_BUF, 1};
  if (vq_submit(rxq, &b, 1, 0) != index)
    fail("virtio-vsock: rx buffer %d did not come back as its own head", index);
}

static void post_event(int index) {
  struct vbuf b = {(uint64_t)&events[index], 4, 1};
  if (vq_submit(evq, &b, 1, 0) != index)
    fail("virtio-vsock: event buffer %d did not come back as its own head", index);
}

static void handle_pkt(const struct vsock_hdr* h, const char* data) {
  if (h->dst_cid != guest_cid)
    fail("virtio-vsock: packet for cid %lu, we are %lu", h->dst_cid, guest_cid);
  if (h->src_cid != HOST_CID) fail("virtio-vsock: packet from cid %lu, want the host (2)", h->src_cid);
  int ours = c.state != CLOSED && h->dst_port == c.local_port &&
             (c.state == LISTENING || h->src_port == c.peer_port);
  if (h->type != TYPE_STREAM || !ours) {
    // Not for a socket of ours: refuse (never answer an RST with one).
    if (h->op != OP_RST)
      send_pkt(OP_RST, 0, h->dst_port, h->src_port, NULL, 0);
    return;
  }
  c.peer_buf_alloc = h->buf_alloc;
  c.peer_fwd_cnt = h->fwd_cnt;
  switch (h->op) {
    case OP_REQUEST:
      if (c.state != LISTENING) {
        send_pkt(OP_RST, 0, h->dst_port, h->src_port, NULL, 0);
        break;
      }
      c.peer_port = h->src_port;
      c.state = CONNECTED;
      send_ctl(OP_RESPONSE, 0);
      break;
    case OP_RESPONSE:
      if (c.state == CONNECTING) c.state = CONNECTED;
      else send_ctl(OP_RST, 0);
      break;
    case OP_RST:
      c.got_rst = 1;
      c.state = CLOSED;
      break;
    case OP_SHUTDOWN:
      c.peer_shutdown |= h->flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
      break;
    case OP_RW:
      if (c.state != CONNECTED) break;
      c.rx_cnt += h->len;
      if (bench_counting) {
        bench_last = rdtsc();
        if (!bench_first) bench_first = bench_last;
        break;
      }
      for (uint32_t i = 0; i < h->len && !c.line_done; i++) {
        if (c.line_len == LINE_MAX) fail("virtio-vsock: line longer than %u bytes", LINE_MAX);
        c.line[c.line_len++] = data[i];
        if (data[i] == '\n') c.line_done = 1;
      }
      break;
    case OP_CREDIT_UPDATE:
      break;  // the fields above are the update
    case OP_CREDIT_REQUEST:
      send_ctl(OP_CREDIT_UPDATE, 0);
      break;
    default:
      send_ctl(OP_RST, 0);
      c.state = CLOSED;
      break;
  }
}

// Handles everything pending on the rx and event queues.
static int poll(void) {
  int n = 0;
  uint32_t len;
  int head;
  while ((head = vq_next_used(evq, &len)) >= 0) {
    if (len < 4) fail("virtio-vsock: event of %u bytes", len);
    uint32_t id = events[head];
    if (id == EVENT_TRANSPORT_RESET)
      fail("virtio-vsock: transport reset event (guest cid now %lu)", virtio_cfg64(dev, 0));
    printf("virtio-vsock: unknown event %u\n", id);
    post_event(head);
    vq_kick(evq);
    n++;
  }
  // At most a queue's worth, buffers given back with one notification.
  int rx = 0;
  while (rx < rxq->size && (head = vq_next_used(rxq, &len)) >= 0) {
    const char* buf = rx_bufs + (uint64_t)head * RX_BUF;
    const struct vsock_hdr* h = (const struct vsock_hdr*)buf;
    if (len < HDR) fail("virtio-vsock: received %u bytes, less than a header", len);
    if (h->len != len - HDR)
      fail("virtio-vsock: header len %u, but %u payload bytes were written (op %u)",
           h->len, len - HDR, h->op);
    handle_pkt(h, buf + HDR);
    post_rx(head);
    rx++;
  }
  if (rx) vq_kick(rxq);
  return n + rx;
}

// Polls until cond() or ms pass; 0 when cond() holds.
static int wait_until(int (*cond)(void), uint32_t ms) {
  uint64_t deadline = ms_deadline(ms);
  for (;;) {
    poll();
    if (cond()) return 0;
    if (rdtsc() > deadline) return -1;
    cpu_relax();
  }
}

static int is_connected(void) { return c.state == CONNECTED || c.state == CLOSED; }
static int has_line(void) { return c.line_done || c.state == CLOSED || c.peer_shutdown; }
static int is_closed(void) { return c.state == CLOSED; }
static int closed_or_shut(void) {
  return c.state == CLOSED || c.peer_shutdown == (SHUTDOWN_RCV | SHUTDOWN_SEND);
}
static uint32_t credit(void) { return c.peer_buf_alloc - (c.tx_cnt - c.peer_fwd_cnt); }
static int has_credit(void) { return credit() > 0 || c.state == CLOSED; }

static void write_all(const char* p, uint32_t n) {
  while (n) {
    if (!credit()) {
      send_ctl(OP_CREDIT_REQUEST, 0);
      if (wait_until(has_credit, timeout_ms)) fail("virtio-vsock: no credit from the host");
      if (c.state != CONNECTED) fail("virtio-vsock: connection reset while sending");
    }
    uint32_t k = n < credit() ? n : credit();
    if (k > RX_PAYLOAD) k = RX_PAYLOAD;
    send_pkt(OP_RW, 0, c.local_port, c.peer_port, p, k);
    c.tx_cnt += k;
    p += k;
    n -= k;
  }
}

static void read_line(const char* what) {
  if (wait_until(has_line, timeout_ms)) fail("virtio-vsock: no line from the host (%s)", what);
  if (!c.line_done) fail("virtio-vsock: connection %s before a whole line (%s, %u bytes)",
                         c.state == CLOSED ? "reset" : "shut down", what, c.line_len);
}

static void close_conn(void) {
  if (c.state == CONNECTED && c.peer_shutdown == (SHUTDOWN_RCV | SHUTDOWN_SEND)) {
    send_ctl(OP_RST, 0);  // the host closed first and waits for our RST
    printf("virtio-vsock: closed\n");
  } else if (c.state == CONNECTED) {
    send_ctl(OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND);
    if (wait_until(is_closed, 2000)) {
      send_ctl(OP_RST, 0);
      printf("virtio-vsock: closed (no rst from the host, sent one)\n");
    } else {
      printf("virtio-vsock: closed\n");
    }
  }
  c.state = CLOSED;
}

static void reset_conn(void) {
  memset(&c, 0, sizeof(c));
}

// ---- the two cases ----

static void serve(uint32_t port) {
  uint32_t wait_ms = (uint32_t)cmdline_int("vsock.wait_ms", 10000);
  reset_conn();
  c.state = LISTENING;
  c.local_port = port;
  printf("virtio-vsock: listening on port %u\n", port);
  if (wait_until(is_connected, wait_ms) || c.state != CONNECTED)
    fail("virtio-vsock: no connection to port %u within %u ms", port, wait_ms);
  read_line("listen");
  char out[LINE_MAX + 8];
  memcpy(out, "echo: ", 6);
  memcpy(out + 6, c.line, c.line_len);
  write_all(out, 6 + c.line_len);
  printf("virtio-vsock: served one connection from host port %u\n", c.peer_port);
  // Let the host read and close first (SHUTDOWN, or RST); then our side.
  wait_until(closed_or_shut, 1000);
  close_conn();
}

static void open_conn(uint32_t port) {
  reset_conn();
  c.state = CONNECTING;
  c.local_port = (uint32_t)cmdline_int("vsock.local_port", 49152);
  c.peer_port = port;
  send_ctl(OP_REQUEST, 0);
  if (wait_until(is_connected, timeout_ms))
    fail("virtio-vsock: no response from host port %u", port);
  if (c.state != CONNECTED) fail("virtio-vsock: host port %u refused the connection", port);
  printf("virtio-vsock: connected to host port %u\n", port);
}

static void connect(uint32_t port) {
  open_conn(port);
  write_all(MESSAGE, sizeof(MESSAGE) - 1);
  read_line("connect");
  printf("virtio-vsock: host echoed %u bytes\n", c.line_len);
  if (c.line_len != sizeof(MESSAGE) - 1 || memcmp(c.line, MESSAGE, c.line_len))
    fail("virtio-vsock: the echo differs from what was sent");
  close_conn();
}

// ---- throughput ----

// TSC ticks per ms for the bench: kvmclock's exact figure, else the
// APIC-timer measurement.
static uint64_t bench_tpm(void) {
  uint64_t k = tsc_per_ms_kvmclock();
  return k ? k : tsc_per_ms();
}

// "virtio-vsock: bench <what> <b> bytes in <ms> ms: <x.yy> MB/s" (MB = 10^6).
static void print_rate(const char* what, uint64_t bytes, uint64_t ticks) {
  uint64_t us = ticks * 1000 / bench_tpm(), x100 = us ? bytes * 100 / us : 0;
  printf("virtio-vsock: bench %s %lu bytes in %lu ms: %lu.%02lu MB/s\n", what, bytes, us / 1000,
         x100 / 100, x100 % 100);
}

// Guest -> host: `mib` MiB to host port `port` in packets of up to `pkt`
// bytes. Each transmit slot holds a header and the payload in one
// descriptor (prepared once; only the header changes); completions and the
// host's credit updates are polled, interrupts suppressed. Two descriptors
// stay free for the control packets send_pkt() may need meanwhile.
static void bench_send(uint32_t port, uint32_t mib, uint32_t pkt) {
  if (pkt < 1 || pkt > 65536) fail("virtio-vsock: vsock.bench_pkt=%u is not 1..65536", pkt);
  uint32_t slot = (HDR + pkt + 63) & ~63u;
  char* slots = dma_alloc((uint64_t)slot * txq->size, 4096);
  for (int i = 0; i < txq->size; i++)
    for (uint32_t k = 0; k < pkt; k++) slots[(uint64_t)i * slot + HDR + k] = "kindling-bench-"[k % 15];
  open_conn(port);
  printf("virtio-vsock: bench tx %u MiB in packets of %u bytes, tsc %lu kHz (%s)\n", mib, pkt,
         bench_tpm(), tsc_per_ms_kvmclock() ? "kvmclock" : "apic timer");
  uint64_t total = (uint64_t)mib << 20, sent = 0;
  uint32_t start = txq->completed, submitted = 0, notifies = txq->notifies, credit_waits = 0;
  vq_set_interrupts(txq, 0);
  vq_set_interrupts(rxq, 0);
  uint64_t t0 = rdtsc(), progress = t0, stall = bench_tpm() * timeout_ms,
           nudge = bench_tpm() * 100;
  int starved = 0;
  while (sent < total) {
    poll();  // credit updates
    if (c.state != CONNECTED || c.peer_shutdown)
      fail("virtio-vsock: bench tx: connection closed by the host after %lu bytes", sent);
    vq_collect(txq);
    uint32_t k = 0;
    while (sent < total && txq->num_free > 2 && credit()) {
      uint32_t n = credit();
      if (n > pkt) n = pkt;
      if (n > total - sent) n = (uint32_t)(total - sent);
      int i = txq->free_head;
      struct vsock_hdr* h = (struct vsock_hdr*)(slots + (uint64_t)i * slot);
      h->src_cid = guest_cid;
      h->dst_cid = HOST_CID;
      h->src_port = c.local_port;
      h->dst_port = c.peer_port;
      h->len = n;
      h->type = TYPE_STREAM;
      h->op = OP_RW;
      h->flags = 0;
      h->buf_alloc = BUF_ALLOC;
      h->fwd_cnt = c.rx_cnt;
      struct vbuf b = {(uint64_t)h, HDR + n, 0};
      if (vq_submit(txq, &b, 1, 0) != i) fail("virtio-vsock: tx slot %d came back elsewhere", i);
      c.tx_cnt += n;
      sent += n;
      k++;
    }
    uint64_t now = rdtsc();
    if (k) {
      submitted += k;
      vq_kick(txq);
      progress = now;
      starved = 0;
      continue;
    }
    if (!credit()) {
      if (!starved) credit_waits++;
      starved = 1;
      // Out of credit for 100 ms: ask (the host normally updates unasked).
      if (now - progress > nudge) {
        send_ctl(OP_CREDIT_REQUEST, 0);
        progress = now;
      }
    }
    if (now - progress > stall) fail("virtio-vsock: bench tx: stuck after %lu bytes", sent);
    cpu_relax();
  }
  uint64_t deadline = ms_deadline(timeout_ms);
  while ((uint32_t)(txq->completed - start) < submitted) {
    vq_collect(txq);
    if (rdtsc() > deadline) fail("virtio-vsock: bench tx: packets still in flight");
    cpu_relax();
  }
  uint64_t t1 = rdtsc();
  vq_set_interrupts(txq, 1);
  vq_set_interrupts(rxq, 1);
  print_rate("tx", sent, t1 - t0);
  printf("virtio-vsock: bench tx %u packets, %u notifies, %u waits for credit\n", submitted,
         txq->notifies - notifies, credit_waits);
  close_conn();
}

// Host -> guest: listen on `port`, count the payload until the host shuts
// down its side or resets (or 2 s pass without data), sending CREDIT_UPDATE
// (without waiting for it) whenever a quarter of our buffer was consumed
// since the last report; interrupts suppressed, everything polled.
static void bench_recv(uint32_t port) {
  uint32_t wait_ms = (uint32_t)cmdline_int("vsock.wait_ms", 10000);
  reset_conn();
  c.state = LISTENING;
  c.local_port = port;
  bench_counting = 1;
  bench_first = bench_last = 0;
  printf("virtio-vsock: bench rx listening on port %u\n", port);
  if (wait_until(is_connected, wait_ms) || c.state != CONNECTED)
    fail("virtio-vsock: no connection to port %u within %u ms", port, wait_ms);
  vq_set_interrupts(rxq, 0);
  vq_set_interrupts(txq, 0);
  // Credit updates go out without waiting for their completion (one at a
  // time: only when nothing else is in flight on the transmit queue).
  struct vsock_hdr* upd = dma_alloc(HDR, 64);
  uint64_t idle = bench_tpm() * 2000, since = rdtsc();
  for (;;) {
    int n = poll();
    vq_collect(txq);
    if (c.rx_cnt - c.reported_fwd >= BUF_ALLOC / 4 && txq->completed == txq->submitted &&
        c.state == CONNECTED) {
      *upd = (struct vsock_hdr){.src_cid = guest_cid, .dst_cid = HOST_CID,
                                .src_port = c.local_port, .dst_port = c.peer_port,
                                .type = TYPE_STREAM, .op = OP_CREDIT_UPDATE,
                                .buf_alloc = BUF_ALLOC, .fwd_cnt = c.rx_cnt};
      c.reported_fwd = c.rx_cnt;
      struct vbuf b = {(uint64_t)upd, HDR, 0};
      if (vq_submit(txq, &b, 1, 0) < 0) fail("virtio-vsock: no transmit ring space");
      vq_kick(txq);
    }
    if (c.state == CLOSED || (c.peer_shutdown & SHUTDOWN_SEND)) break;
    uint64_t now = rdtsc();
    if (n) since = now;
    else if (now - since > idle) break;
    else cpu_relax();
  }
  uint64_t deadline = ms_deadline(timeout_ms);
  while (txq->completed != txq->submitted) {
    vq_collect(txq);
    if (rdtsc() > deadline) fail("virtio-vsock: bench rx: a credit update still in flight");
    cpu_relax();
  }
  vq_set_interrupts(rxq, 1);
  vq_set_interrupts(txq, 1);
  bench_counting = 0;
  print_rate("rx", c.rx_cnt, bench_last - bench_first);
  close_conn();
}

static void setup(void) {
  dev = virtio_find(VIRTIO_ID_VSOCK, 0);
  if (!dev) fail("virtio-vsock: no device (cmdline: %s)", boot_cmdline());
  virtio_begin(dev, VF(VIRTIO_VSOCK_F_STREAM) |
                       (cmdline_int("vsock.event_idx", 0) ? VF(VIRTIO_F_EVENT_IDX) : 0));
  virtio_setup_queue(dev, RX_Q);
  virtio_setup_queue(dev, TX_Q);
  virtio_setup_queue(dev, EVENT_Q);
  virtio_driver_ok(dev);
  rxq = &dev->vq[RX_Q];
  txq = &dev->vq[TX_Q];
  evq = &dev->vq[EVENT_Q];
  guest_cid = virtio_cfg64(dev, 0);
  char where[48];
  virtio_where(dev, where, sizeof(where));
  printf("virtio-vsock: %s, queue sizes %u/%u/%u\n", where, rxq->size, txq->size, evq->size);
  printf("virtio-vsock: guest cid %lu\n", guest_cid);
  if (guest_cid <= 2 || guest_cid >> 32)
    fail("virtio-vsock: guest cid %lu is reserved or beyond 32 bits", guest_cid);
  rx_bufs = dma_alloc((uint64_t)RX_BUF * rxq->size, 4096);
  events = dma_alloc(4 * NEVENTS, 64);
  tx_hdr = dma_alloc(HDR, 64);
  tx_data = dma_alloc(LINE_MAX + 8 > RX_PAYLOAD ? LINE_MAX + 8 : RX_PAYLOAD, 64);
  for (int i = 0; i < rxq->size; i++) post_rx(i);
  vq_kick(rxq);
  for (int i = 0; i < NEVENTS && i < evq->size; i++) post_event(i);
  vq_kick(evq);
}

static long vsock_main(long unused) {
  (void)unused;
  timeout_ms = (uint32_t)cmdline_int("vsock.timeout_ms", 5000);
  long listen_port = cmdline_int("vsock.listen", -1);
  long connect_port = cmdline_int("vsock.connect", -1);
  long bench_port = cmdline_int("vsock.bench_port", -1);
  long bench_rx_port = cmdline_int("vsock.bench_rx_port", -1);
  setup();
  if (listen_port >= 0) serve((uint32_t)listen_port);
  if (connect_port >= 0) connect((uint32_t)connect_port);
  if (bench_port >= 0)
    bench_send((uint32_t)bench_port, (uint32_t)cmdline_int("vsock.bench_mib", 64),
               (uint32_t)cmdline_int("vsock.bench_pkt", 4096));
  if (bench_rx_port >= 0) bench_recv((uint32_t)bench_rx_port);
  if (bench_port >= 0 || bench_rx_port >= 0) dev->quiet_ok = 1;  // interrupts off on purpose
  if (listen_port < 0 && connect_port < 0 && bench_port < 0 && bench_rx_port < 0)
    printf("virtio-vsock: no vsock.listen or vsock.connect: nothing to do\n");
  virtio_report_irqs(dev, "virtio-vsock");
  if (virtio_status(dev) & VIRTIO_STATUS_NEEDS_RESET)
    fail("virtio-vsock: device needs reset (status %#x)", virtio_status(dev));
  printf("virtio-vsock: ok\n");
  return 0;
}

int main(void) {
  virtio_discover();
  tsc_per_ms();
  tsc_per_ms_kvmclock();
  return (int)run_user(vsock_main, 0, /*interrupts=*/1);
}
