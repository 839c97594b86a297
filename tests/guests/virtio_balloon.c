// virtio_balloon: the first virtio-balloon device (ID 5): touch memory,
// inflate the balloon with pages of it, follow target changes, send memory
// statistics, report free pages, deflate and re-use the pages.
//
// Command line switches:
//   balloon.touch_mib=N      MiB of RAM to write first (64); the balloon's
//                            pages come from there
//   balloon.inflate_pages=N  inflate N pages whatever the device's num_pages
//                            says (the driver may give pages voluntarily)
//   balloon.wait_ms=N        wait up to N ms for a non-zero num_pages before
//                            inflating (0)
//   balloon.hold_ms=N        after inflating, hold N ms (0), following
//                            num_pages changes meanwhile
//   balloon.stats=0|1        negotiate VIRTIO_BALLOON_F_STATS_VQ (1)
//   balloon.stats_ms=N       how long to wait for the device to use the
//                            stats buffer (3000)
//   balloon.report=0|1       negotiate VIRTIO_BALLOON_F_PAGE_REPORTING (1)
//
// Queues (spec 5.5.2): inflateq 0, deflateq 1, statsq 2 (with STATS_VQ),
// then reporting_vq as the next index (2 or 3: after the queues present;
// FREE_PAGE_HINT is never negotiated). Pages are 4 KiB, PFNs u32, at most
// 256 per inflate/deflate buffer; each buffer is waited for before the next.
//
// Runs in ring 3 with interrupts on, like virtio_blk.
#include "virtio.h"

#define VIRTIO_BALLOON_F_MUST_TELL_HOST 0
#define VIRTIO_BALLOON_F_STATS_VQ 1
#define VIRTIO_BALLOON_F_PAGE_REPORTING 5

#define CFG_NUM_PAGES 0
#define CFG_ACTUAL 4

#define INFLATE_Q 0
#define DEFLATE_Q 1
#define STATS_Q 2

#define PAGE 4096u
#define BATCH 256
#define REPORT_BYTES (4u << 20)
#define REPORT_CHUNK (2u << 20)  // order 9

// Memory statistics tags (spec 5.5.6.3).
#define S_SWAP_IN 0
#define S_SWAP_OUT 1
#define S_MAJFLT 2
#define S_MINFLT 3
#define S_MEMFREE 4
#define S_MEMTOT 5
#define S_AVAIL 6
#define NSTATS 7

struct balloon_stat {
  uint16_t tag;
  uint64_t val;
} __attribute__((packed));
_Static_assert(sizeof(struct balloon_stat) == 10, "virtio_balloon_stat");

static struct virtio_dev* dev;
static int stats_q = -1, report_q = -1;
static uint8_t* area;         // touched memory, `npages` pages
static uint32_t npages;
static uint32_t nballoon;     // pages [0, nballoon) of area are in the balloon
static uint8_t* ballooned;    // per page: was in the balloon at some time
static uint32_t* pfns;        // BATCH PFNs
static struct balloon_stat* stats;
static int stats_head = -1;
static uint32_t target_seen;  // the num_pages we act on

static uint64_t ms_deadline(uint32_t ms) { return rdtsc() + tsc_per_ms() * ms; }

static uint64_t pattern(uint64_t addr) { return addr * 0x9e3779b97f4a7c15ull ^ 0x6b696e646c696e67ull; }

static void fill_page(uint8_t* p) {
  uint64_t* w = (uint64_t*)p;
  for (uint32_t i = 0; i < PAGE / 8; i++) w[i] = pattern((uint64_t)&w[i]);
}

// 0: the page holds the pattern, 1: it is all zeros, -1: anything else.
static int check_page(const uint8_t* p) {
  const uint64_t* w = (const uint64_t*)p;
  int zero = w[0] == 0;
  for (uint32_t i = 0; i < PAGE / 8; i++)
    if (w[i] != (zero ? 0 : pattern((uint64_t)&w[i]))) return -1;
  return zero;
}

// One inflate or deflate buffer: pages [first, first + n) of the area.
static void send_pfns(int queue, uint32_t first, uint32_t n) {
  for (uint32_t i = 0; i < n; i++)
    pfns[i] = (uint32_t)(((uint64_t)area + (uint64_t)(first + i) * PAGE) >> 12);
  struct vbuf b = {(uint64_t)pfns, n * 4, 0};
  struct virtq* q = &dev->vq[queue];
  int head = vq_submit(q, &b, 1, 0);
  if (head < 0) fail("virtio-balloon: no room on queue %d", queue);
  vq_kick(q);
  if (vq_wait(q, head, NULL, 5000))
    fail("virtio-balloon: %s of %u pages timed out", queue == INFLATE_Q ? "inflate" : "deflate", n);
}

// Inflates or deflates to `pages` (at most npages) and updates `actual`.
static void balloon_to(uint32_t pages) {
  if (pages > npages) pages = npages;
  while (nballoon < pages) {
    uint32_t n = pages - nballoon < BATCH ? pages - nballoon : BATCH;
    send_pfns(INFLATE_Q, nballoon, n);
    for (uint32_t i = 0; i < n; i++) ballooned[nballoon + i] = 1;
    nballoon += n;
  }
  while (nballoon > pages) {
    uint32_t n = nballoon - pages < BATCH ? nballoon - pages : BATCH;
    send_pfns(DEFLATE_Q, nballoon - n, n);
    nballoon -= n;
  }
  virtio_cfg_write32(dev, CFG_ACTUAL, nballoon);
}

static void fill_stats(void) {
  uint64_t total = 0;
  const struct hvm_memmap_entry* m = boot_memmap();
  for (uint32_t i = 0; i < boot_memmap_count(); i++)
    if (m[i].type == HVM_MEMMAP_TYPE_RAM) total += m[i].size;
  uint64_t used = (uint64_t)(__image_end - __image_start) + (uint64_t)(npages - nballoon) * PAGE;
  uint64_t free = total > used ? total - used : 0;
  static const uint16_t tags[NSTATS] = {S_SWAP_IN, S_SWAP_OUT, S_MAJFLT, S_MINFLT,
                                        S_MEMFREE, S_MEMTOT, S_AVAIL};
  uint64_t vals[NSTATS] = {0, 0, 0, 0, free, total, free};
  for (int i = 0; i < NSTATS; i++) {
    stats[i].tag = tags[i];
    stats[i].val = vals[i];
  }
}

static void post_stats(void) {
  fill_stats();
  struct vbuf b = {(uint64_t)stats, sizeof(*stats) * NSTATS, 0};
  stats_head = vq_submit(&dev->vq[stats_q], &b, 1, 0);
  if (stats_head < 0) fail("virtio-balloon: no room on the stats queue");
  vq_kick(&dev->vq[stats_q]);
}

static void setup(void) {
  dev = virtio_find(VIRTIO_ID_BALLOON, 0);
  if (!dev) fail("virtio-balloon: no device (cmdline: %s)", boot_cmdline());
  uint64_t want = VF(VIRTIO_BALLOON_F_MUST_TELL_HOST);
  if (cmdline_int("balloon.stats", 1)) want |= VF(VIRTIO_BALLOON_F_STATS_VQ);
  if (cmdline_int("balloon.report", 1)) want |= VF(VIRTIO_BALLOON_F_PAGE_REPORTING);
  virtio_begin(dev, want);
  virtio_setup_queue(dev, INFLATE_Q);
  virtio_setup_queue(dev, DEFLATE_Q);
  int next = DEFLATE_Q + 1;
  if (virtio_has(dev, VIRTIO_BALLOON_F_STATS_VQ)) virtio_setup_queue(dev, stats_q = next++);
  if (virtio_has(dev, VIRTIO_BALLOON_F_PAGE_REPORTING)) virtio_setup_queue(dev, report_q = next++);
  virtio_driver_ok(dev);
  char where[48];
  virtio_where(dev, where, sizeof(where));
  printf("virtio-balloon: %s, stats %s, reporting %s\n", where,
         stats_q >= 0 ? "on" : "off", report_q >= 0 ? "on" : "off");
  pfns = dma_alloc(BATCH * 4, 64);
  if (stats_q >= 0) {
    // The stats queue starts with one buffer the device keeps until it
    // wants statistics (spec 5.5.6.3).
    stats = dma_alloc(sizeof(*stats) * NSTATS, 64);
    post_stats();
  }
}

static void touch(void) {
  uint32_t mib = (uint32_t)cmdline_int("balloon.touch_mib", 64);
  npages = mib * (1024 * 1024 / PAGE);
  area = dma_reserve((uint64_t)npages * PAGE, PAGE);
  ballooned = dma_alloc(npages ? npages : 1, 16);
  for (uint32_t i = 0; i < npages; i++) fill_page(area + (uint64_t)i * PAGE);
  printf("virtio-balloon: touched %u MiB\n", mib);
}

static uint32_t read_target(void) { return virtio_cfg32(dev, CFG_NUM_PAGES); }

static void follow(uint32_t t) {
  target_seen = t;
  printf("virtio-balloon: new target %u\n", t);
  balloon_to(t);
  printf("virtio-balloon: balloon now %u pages\n", nballoon);
}

// Holds for ms, following changes of num_pages (config interrupts, and a
// read every 100 ms in case one is missed).
static void hold(uint32_t ms) {
  printf("virtio-balloon: holding\n");
  uint64_t end = ms_deadline(ms), next_read = 0;
  uint32_t irqs = dev->config_irqs;
  while (rdtsc() < end) {
    if (dev->config_irqs != irqs || rdtsc() > next_read) {
      irqs = dev->config_irqs;
      next_read = ms_deadline(100);
      uint32_t t = read_target();
      if (t != target_seen) follow(t);
    }
    cpu_relax();
  }
}

static void send_stats(void) {
  uint32_t ms = (uint32_t)cmdline_int("balloon.stats_ms", 3000);
  if (vq_wait(&dev->vq[stats_q], stats_head, NULL, ms)) {
    printf("virtio-balloon: stats not requested within %u ms\n", ms);
    return;
  }
  post_stats();  // the device asked: fresh numbers, same buffer
  printf("virtio-balloon: stats sent\n");
}

static void report_free(void) {
  uint8_t* free = dma_reserve(REPORT_BYTES, REPORT_CHUNK);  // never touched
  struct vbuf b[REPORT_BYTES / REPORT_CHUNK];
  for (uint32_t i = 0; i < REPORT_BYTES / REPORT_CHUNK; i++)
    b[i] = (struct vbuf){(uint64_t)free + (uint64_t)i * REPORT_CHUNK, REPORT_CHUNK, 1};
  struct virtq* q = &dev->vq[report_q];
  int head = vq_submit(q, b, REPORT_BYTES / REPORT_CHUNK, 0);
  if (head < 0) fail("virtio-balloon: no room on the reporting queue");
  vq_kick(q);
  if (vq_wait(q, head, NULL, 5000)) fail("virtio-balloon: free page report timed out");
  printf("virtio-balloon: reported %u MiB free\n", REPORT_BYTES >> 20);
}

// After the deflate: every page that was in the balloon reads as zeros or
// the pattern (the host may or may not have dropped it), every other page
// as the pattern; then all of it must take a new pattern.
static void retouch(void) {
  uint32_t zeroed = 0, kept = 0, was = 0;
  for (uint32_t i = 0; i < npages; i++) {
    uint8_t* p = area + (uint64_t)i * PAGE;
    int c = check_page(p);
    if (c < 0 || (c == 1 && !ballooned[i]))
      fail("virtio-balloon: page %#lx holds neither the pattern nor zeros%s",
           (uint64_t)p, ballooned[i] ? "" : " (never ballooned)");
    if (ballooned[i]) {
      was++;
      if (c) zeroed++; else kept++;
    }
    fill_page(p);
    if (check_page(p)) fail("virtio-balloon: page %#lx does not keep what is written", (uint64_t)p);
  }
  printf("virtio-balloon: re-touched %u pages: %u zeroed, %u kept\n", was, zeroed, kept);
}

static long balloon_main(long unused) {
  (void)unused;
  setup();
  touch();
  uint32_t wait_ms = (uint32_t)cmdline_int("balloon.wait_ms", 0);
  uint64_t deadline = ms_deadline(wait_ms);
  uint32_t t = read_target();
  while (!t && rdtsc() < deadline) {
    cpu_relax();
    t = read_target();
  }
  printf("virtio-balloon: num_pages %u\n", t);
  target_seen = t;
  long voluntary = cmdline_int("balloon.inflate_pages", -1);
  uint32_t want = voluntary >= 0 ? (uint32_t)voluntary : t;
  balloon_to(want);
  printf("virtio-balloon: inflated %u pages (target %u)\n", nballoon, want);
  uint32_t hold_ms = (uint32_t)cmdline_int("balloon.hold_ms", 0);
  if (hold_ms) hold(hold_ms);
  if (stats_q >= 0) send_stats();
  if (report_q >= 0) report_free();
  uint32_t n = nballoon;
  balloon_to(0);
  printf("virtio-balloon: deflated %u pages\n", n);
  retouch();
  virtio_report_irqs(dev, "virtio-balloon");
  if (virtio_status(dev) & VIRTIO_STATUS_NEEDS_RESET)
    fail("virtio-balloon: device needs reset (status %#x)", virtio_status(dev));
  printf("virtio-balloon: ok\n");
  return 0;
}

int main(void) {
  virtio_discover();
  tsc_per_ms();
  return (int)run_user(balloon_main, 0, /*interrupts=*/1);
}
