// virtio_hostile: feeds the first virtio-blk device malformed rings and
// checks that the device neither hangs the VM nor dies: after each case the
// guest resets and re-initialises the device, a normal read must work, and
// the virtio-rng device (when present) must still answer.
//
// Cases (command line `hostile.cases=a,b,...`; default: all, in this order):
//   loop    header 0 -> 1 -> 2 -> 1 -> ... (a NEXT chain that never ends)
//   next    a NEXT index beyond the queue size
//   oob     a device-writable buffer at 0xffff000000000000 (beyond any RAM)
//   hole    a device-writable buffer at 0xf0000000 (in the 32-bit MMIO hole)
//   len     a write request whose data descriptor is 0xfffffff0 bytes long
//   nested  an indirect table holding an INDIRECT descriptor (needs
//           VIRTIO_F_INDIRECT_DESC; "skipped" when not offered)
//   avail   avail->idx moved by queue size + 5 in one step
//   storm   100000 QueueNotify writes (`hostile.storm=N`) around one valid
//           read: the read must complete with status OK
//
// Output per case: `hostile: <case> -> <outcome>, blk recovered, rng ok`
// (`rng absent` without a virtio-rng), where <outcome> is
//   needs-reset  the device set DEVICE_NEEDS_RESET (0x40) in Status
//   ioerr        it completed the request with VIRTIO_BLK_S_IOERR
//   unsupp       ... with VIRTIO_BLK_S_UNSUPP
//   ok           ... with VIRTIO_BLK_S_OK (only right for storm)
//   status-<n>   ... with another status byte <n> (or 255: never written)
//   ignored      neither within hostile.wait_ms (default 1000) ms
// needs-reset and ioerr are the accepted answers to a malformed ring, ok
// the one for storm: anything else FAILs (after all cases ran) unless
// `hostile.strict=0`. Then `hostile: ok`.
#include "virtio.h"

#define SECTOR 512
#define BAD_ADDR_OOB 0xffff000000000000ull
#define BAD_ADDR_HOLE 0xf0000000ull

struct scratch {
  struct virtio_blk_req_hdr hdr;
  uint8_t status;
  uint8_t pad[15];
  struct virtq_desc table1[4];  // indirect tables for "nested"
  struct virtq_desc table2[4];
  uint8_t data[SECTOR];
};

static struct virtio_dev* blk;
static struct virtio_dev* rng;
static struct scratch* s;
static uint64_t blk_want;
static uint32_t wait_ms;
static int bad_outcomes;

static void blk_reinit(void) {
  if (virtio_reset(blk))
    fail("hostile: blk status still %#x after reset", virtio_status(blk));
  virtio_init(blk, blk_want, 1);
}

static void header(uint32_t type) {
  s->hdr = (struct virtio_blk_req_hdr){type, 0, 0};
  s->status = 0xff;
}

// The usual three descriptors at 0, 1, 2 with the data buffer replaced.
static void chain3(struct virtq* q, uint64_t addr, uint32_t len, int dev_writes) {
  vq_raw_desc(q, 0, (uint64_t)&s->hdr, sizeof(s->hdr), VIRTQ_DESC_F_NEXT, 1);
  vq_raw_desc(q, 1, addr, len,
              VIRTQ_DESC_F_NEXT | (dev_writes ? VIRTQ_DESC_F_WRITE : 0), 2);
  vq_raw_desc(q, 2, (uint64_t)&s->status, 1, VIRTQ_DESC_F_WRITE, 0);
}

// Header, then writable 1 -> 2 -> 1 -> ...: a loop that keeps the
// readable-before-writable order valid, so only loop detection catches it.
static void case_loop(struct virtq* q) {
  header(VIRTIO_BLK_T_IN);
  chain3(q, (uint64_t)s->data, SECTOR, 1);
  vq_raw_desc(q, 2, (uint64_t)&s->status, 1,
              VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
  vq_raw_publish(q, 0);
}

static void case_next(struct virtq* q) {
  header(VIRTIO_BLK_T_IN);
  chain3(q, (uint64_t)s->data, SECTOR, 1);
  vq_raw_desc(q, 1, (uint64_t)s->data, SECTOR,
              VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, q->size + 3);
  vq_raw_publish(q, 0);
}

static void case_oob(struct virtq* q) {
  header(VIRTIO_BLK_T_IN);
  chain3(q, BAD_ADDR_OOB, SECTOR, 1);
  vq_raw_publish(q, 0);
}

static void case_hole(struct virtq* q) {
  header(VIRTIO_BLK_T_IN);
  chain3(q, BAD_ADDR_HOLE, SECTOR, 1);
  vq_raw_publish(q, 0);
}

// A write (the device only reads guest memory) so that a device honouring
// the length cannot scribble over the guest.
static void case_len(struct virtq* q) {
  header(VIRTIO_BLK_T_OUT);
  chain3(q, (uint64_t)s->data, 0xfffffff0u, 0);
  vq_raw_publish(q, 0);
}

static void case_nested(struct virtq* q) {
  header(VIRTIO_BLK_T_IN);
  struct virtq_desc* t2 = s->table2;
  t2[0] = (struct virtq_desc){(uint64_t)&s->hdr, sizeof(s->hdr), VIRTQ_DESC_F_NEXT, 1};
  t2[1] = (struct virtq_desc){(uint64_t)s->data, SECTOR,
                              VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2};
  t2[2] = (struct virtq_desc){(uint64_t)&s->status, 1, VIRTQ_DESC_F_WRITE, 0};
  struct virtq_desc* t1 = s->table1;
  t1[0] = (struct virtq_desc){(uint64_t)t2, 3 * sizeof(*t2), VIRTQ_DESC_F_INDIRECT, 0};
  vq_raw_desc(q, 0, (uint64_t)t1, sizeof(*t1), VIRTQ_DESC_F_INDIRECT, 0);
  vq_raw_publish(q, 0);
}

static void case_avail(struct virtq* q) {
  header(VIRTIO_BLK_T_IN);
  chain3(q, (uint64_t)s->data, SECTOR, 1);
  vq_raw_set_avail_idx(q, (uint16_t)(q->size + 5));
}

static void case_storm(struct virtq* q) {
  long n = cmdline_int("hostile.storm", 100000);
  for (long i = 0; i < n / 2; i++) virtio_notify(blk, q->index);
  header(VIRTIO_BLK_T_IN);
  chain3(q, (uint64_t)s->data, SECTOR, 1);
  vq_raw_publish(q, 0);
  for (long i = n / 2; i < n; i++) virtio_notify(blk, q->index);
}

struct hostile_case {
  const char* name;
  void (*run)(struct virtq* q);
  int needs_indirect;
};
static const struct hostile_case cases[] = {
    {"loop", case_loop, 0},     {"next", case_next, 0},
    {"oob", case_oob, 0},       {"hole", case_hole, 0},
    {"len", case_len, 0},       {"nested", case_nested, 1},
    {"avail", case_avail, 0},   {"storm", case_storm, 0},
};
#define NCASES (int)(sizeof(cases) / sizeof(cases[0]))

// What the device made of it within wait_ms.
static const char* outcome(struct virtq* q, uint16_t used_before) {
  static char other[16];
  uint64_t deadline = rdtsc() + tsc_per_ms() * wait_ms;
  for (;;) {
    if (virtio_status(blk) & VIRTIO_STATUS_NEEDS_RESET) return "needs-reset";
    if (vq_raw_used_idx(q) != used_before) break;
    if (rdtsc() > deadline) return "ignored";
    cpu_relax();
  }
  __asm__ volatile("" ::: "memory");
  switch (s->status) {
    case VIRTIO_BLK_S_OK: return "ok";
    case VIRTIO_BLK_S_IOERR: return "ioerr";
    case VIRTIO_BLK_S_UNSUPP: return "unsupp";
  }
  snprintf(other, sizeof(other), "status-%u", s->status);
  return other;
}

static int streq(const char* a, const char* b) {
  size_t n = strlen(a);
  return n == strlen(b) && !memcmp(a, b, n);
}

static int accepted(const char* name, const char* out) {
  if (streq(name, "storm")) return streq(out, "ok");
  return streq(out, "needs-reset") || streq(out, "ioerr");
}

static void check_blk(void) {
  int st = blk_request(&blk->vq[0], VIRTIO_BLK_T_IN, 1, s->data, SECTOR, 1, 0);
  if (st != VIRTIO_BLK_S_OK) fail("hostile: blk read after reset: status %d", st);
}

static const char* check_rng(void) {
  if (!rng) return "rng absent";
  struct virtq* q = &rng->vq[0];
  memset(s->data, 0, 16);
  struct vbuf b = {(uint64_t)s->data, 16, 1};
  int head = vq_submit(q, &b, 1, 0);
  uint32_t len;
  if (head < 0) fail("hostile: rng ring full");
  vq_kick(q);
  if (vq_wait(q, head, &len, 5000)) fail("hostile: rng stopped answering");
  if (len == 0) fail("hostile: rng returned 0 bytes");
  return "rng ok";
}

static void run_case(const struct hostile_case* c) {
  struct virtq* q = &blk->vq[0];
  if (c->needs_indirect && !virtio_has(blk, VIRTIO_F_INDIRECT_DESC)) {
    printf("hostile: %s -> skipped (no indirect)\n", c->name);
    return;
  }
  uint16_t used_before = vq_raw_used_idx(q);
  c->run(q);
  if (!streq(c->name, "storm")) virtio_notify(blk, q->index);
  const char* out = outcome(q, used_before);
  if (!accepted(c->name, out)) bad_outcomes++;
  blk_reinit();
  check_blk();
  printf("hostile: %s -> %s, blk recovered, %s\n", c->name, out, check_rng());
}

// Runs the cases named in hostile.cases (comma-separated), else all.
static void run_selected(void) {
  char list[128];
  if (!cmdline_str("hostile.cases", list, sizeof(list))) {
    for (int i = 0; i < NCASES; i++) run_case(&cases[i]);
    return;
  }
  for (char* p = list; *p;) {
    char* name = p;
    while (*p && *p != ',') p++;
    if (*p) *p++ = '\0';
    int i = 0;
    while (i < NCASES && !streq(name, cases[i].name)) i++;
    if (i == NCASES) fail("hostile: unknown case '%s'", name);
    run_case(&cases[i]);
  }
}

static long hostile_main(long unused) {
  (void)unused;
  blk = virtio_find(VIRTIO_ID_BLK, 0);
  rng = virtio_find(VIRTIO_ID_RNG, 0);
  if (!blk) fail("hostile: no virtio-blk device");
  s = dma_alloc(sizeof(*s), 4096);
  wait_ms = (uint32_t)cmdline_int("hostile.wait_ms", 1000);
  blk_want = VF(VIRTIO_F_INDIRECT_DESC);
  blk_reinit();
  if (virtio_has(blk, VIRTIO_BLK_F_RO)) fail("hostile: the disk must be writable");
  if (rng) virtio_init(rng, 0, 1);
  check_blk();
  char where[48];
  virtio_where(blk, where, sizeof(where));
  printf("hostile: blk at %s, rng %s\n", where, rng ? "present" : "absent");
  run_selected();
  virtio_report_irqs(blk, "hostile: blk");
  if (bad_outcomes && cmdline_int("hostile.strict", 1))
    fail("hostile: %d case(s) with an unacceptable outcome", bad_outcomes);
  printf("hostile: ok\n");
  return 0;
}

int main(void) {
  virtio_discover();
  tsc_per_ms();
  return (int)run_user(hostile_main, 0, /*interrupts=*/1);
}
