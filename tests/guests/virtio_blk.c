// virtio_blk: drives the first virtio-blk device (ID 2) through every
// request type it offers and checks the data on the way back.
//
// Command line switches:
//   blk.indirect=0|1   use indirect descriptor tables when offered (1)
//   blk.event_idx=0|1  negotiate VIRTIO_F_EVENT_IDX when offered (1)
//   blk.hold           after "virtio-blk: flushed", spin forever (a host
//                      test kills the VMM there and checks the disk file)
//
// Disk contents left behind (unless read-only): sectors 1..8 and the
// 1 MiB-ish run from sector 64 each hold "kindling-blk sector <n>\n"
// repeated over the 512 bytes (<n> = sector number, decimal); sector 8 is
// zeroed again when WRITE_ZEROES is offered; DISCARD hits 8 sectors (or the
// discard alignment) from sector 4096 (a host test may not rely on them).
//
// The work runs in ring 3 with interrupts on (ring-0 code is slow on
// kvm_pvm hosts); discovery and the IOAPIC setup run in ring 0 first.
#include "virtio.h"

#define SECTOR 512
#define BIG_SECTOR 64             // first sector of the multi-segment write
#define BIG_BYTES (1u << 20)
#define DISCARD_SECTOR 4096
#define TIMEOUT_STATUS(st) ((st) == -1 ? "timed out" : "no ring space")

// Config space offsets (spec 5.2.4).
#define CFG_CAPACITY 0
#define CFG_SIZE_MAX 8
#define CFG_SEG_MAX 12
#define CFG_BLK_SIZE 20
#define CFG_MAX_DISCARD_SECTORS 36
#define CFG_MAX_DISCARD_SEG 40
#define CFG_DISCARD_ALIGNMENT 44
#define CFG_MAX_WRITE_ZEROES_SECTORS 48
#define CFG_MAX_WRITE_ZEROES_SEG 52

static struct virtio_dev* dev;
static struct virtq* q;
static int indirect;
static uint64_t capacity;
static uint32_t max_segs;   // data segments per request
static uint32_t size_max;   // bytes per segment (0: no limit)
static char* buf_a;         // BIG_BYTES each
static char* buf_b;

static void fill_sector(char* p, uint64_t n) {
  char line[48];
  int len = snprintf(line, sizeof(line), "kindling-blk sector %lu\n", n);
  for (int i = 0; i < SECTOR; i++) p[i] = line[i % len];
}

// A request that must succeed.
static void must(uint32_t type, uint64_t sector, void* data, uint32_t len,
                 int nseg, const char* what) {
  int st = blk_request(q, type, sector, data, len, nseg, indirect);
  if (st < 0) fail("virtio-blk: %s %s", what, TIMEOUT_STATUS(st));
  if (st != VIRTIO_BLK_S_OK) fail("virtio-blk: %s: status %d", what, st);
}

// A request that must fail with `want` (IOERR / UNSUPP).
static void must_fail(uint32_t type, uint64_t sector, void* data,
                      uint32_t len, int want, const char* what) {
  int st = blk_request(q, type, sector, data, len, 1, indirect);
  if (st < 0) fail("virtio-blk: %s %s", what, TIMEOUT_STATUS(st));
  if (st != want) fail("virtio-blk: %s: status %d, want %d", what, st, want);
}

static void setup(void) {
  dev = virtio_find(VIRTIO_ID_BLK, 0);
  if (!dev) fail("virtio-blk: no device (cmdline: %s)", boot_cmdline());
  uint64_t want = VF(VIRTIO_BLK_F_SIZE_MAX) | VF(VIRTIO_BLK_F_SEG_MAX) |
                  VF(VIRTIO_BLK_F_RO) | VF(VIRTIO_BLK_F_BLK_SIZE) |
                  VF(VIRTIO_BLK_F_FLUSH) | VF(VIRTIO_BLK_F_DISCARD) |
                  VF(VIRTIO_BLK_F_WRITE_ZEROES);
  if (cmdline_int("blk.indirect", 1)) want |= VF(VIRTIO_F_INDIRECT_DESC);
  if (cmdline_int("blk.event_idx", 1)) want |= VF(VIRTIO_F_EVENT_IDX);
  virtio_init(dev, want, 1);
  q = &dev->vq[0];
  indirect = virtio_has(dev, VIRTIO_F_INDIRECT_DESC);
  capacity = virtio_cfg64(dev, CFG_CAPACITY);
  char where[48];
  virtio_where(dev, where, sizeof(where));
  printf("virtio-blk: %s, queue size %u\n", where, q->size);
  printf("virtio-blk: capacity %lu sectors, features %#lx\n", capacity,
         dev->features);
}

static void read_limits(void) {
  uint32_t seg_max = virtio_has(dev, VIRTIO_BLK_F_SEG_MAX)
                         ? virtio_cfg32(dev, CFG_SEG_MAX) : 0;
  uint32_t blk_size = virtio_has(dev, VIRTIO_BLK_F_BLK_SIZE)
                          ? virtio_cfg32(dev, CFG_BLK_SIZE) : SECTOR;
  size_max = virtio_has(dev, VIRTIO_BLK_F_SIZE_MAX)
                 ? virtio_cfg32(dev, CFG_SIZE_MAX) : 0;
  printf("virtio-blk: blk_size %u, seg_max %u, size_max %u\n", blk_size,
         seg_max, size_max);
  printf("virtio-blk: indirect %s, event_idx %s\n", indirect ? "on" : "off",
         virtio_has(dev, VIRTIO_F_EVENT_IDX) ? "on" : "off");
  if (blk_size != SECTOR)
    fail("virtio-blk: blk_size %u: only 512-byte blocks are tested", blk_size);
  if (virtio_has(dev, VIRTIO_BLK_F_SEG_MAX) && seg_max == 0)
    fail("virtio-blk: VIRTIO_BLK_F_SEG_MAX with seg_max 0");
  if (virtio_has(dev, VIRTIO_BLK_F_SIZE_MAX) && size_max < SECTOR)
    fail("virtio-blk: size_max %u is below one sector", size_max);
  // A chain (header + data + status) may not exceed the queue size.
  max_segs = q->size - 2u;
  if (max_segs > VIRTQ_MAX_CHAIN - 2u) max_segs = VIRTQ_MAX_CHAIN - 2u;
  if (seg_max && seg_max < max_segs) max_segs = seg_max;
}

static void get_id(void) {
  char* id = buf_a;
  memset(id, 0, 32);
  int st = blk_request(q, VIRTIO_BLK_T_GET_ID, 0, id, VIRTIO_BLK_ID_BYTES, 1,
                       indirect);
  if (st < 0) fail("virtio-blk: GET_ID %s", TIMEOUT_STATUS(st));
  if (st == VIRTIO_BLK_S_UNSUPP) {
    printf("virtio-blk: id unsupported\n");
    return;
  }
  if (st != VIRTIO_BLK_S_OK) fail("virtio-blk: GET_ID: status %d", st);
  id[VIRTIO_BLK_ID_BYTES] = '\0';  // 20 bytes, NUL-terminated only if shorter
  for (char* p = id; *p; p++)
    if (*p < 0x20 || *p > 0x7e || *p == '"') *p = '?';
  printf("virtio-blk: id \"%s\"\n", id);
}

static void small_writes(void) {
  for (uint64_t s = 1; s <= 8; s++) {
    fill_sector(buf_a, s);
    must(VIRTIO_BLK_T_OUT, s, buf_a, SECTOR, 1, "write");
  }
  printf("virtio-blk: wrote sectors 1-8\n");
  memset(buf_b, 0, 8 * SECTOR);
  must(VIRTIO_BLK_T_IN, 1, buf_b, 8 * SECTOR, max_segs < 2 ? 1 : 2, "read");
  for (uint64_t s = 1; s <= 8; s++) {
    fill_sector(buf_a, s);
    if (memcmp(buf_a, buf_b + (s - 1) * SECTOR, SECTOR))
      fail("virtio-blk: sector %lu reads back wrong", s);
  }
  printf("virtio-blk: read back sectors 1-8 ok\n");
}

// Bytes and segment count of the big request: up to 16 segments of equal,
// sector-multiple size within seg_max and size_max.
static uint32_t big_layout(uint32_t* nseg) {
  uint32_t n = max_segs < 16 ? max_segs : 16;
  uint32_t seg = BIG_BYTES / n & ~(SECTOR - 1u);
  if (size_max && seg > size_max) seg = size_max & ~(SECTOR - 1u);
  *nseg = n;
  return seg * n;
}

static void big_write(void) {
  uint32_t nseg, bytes = big_layout(&nseg);
  if (capacity < DISCARD_SECTOR + 64)
    fail("virtio-blk: capacity %lu sectors; the test needs %u", capacity,
         DISCARD_SECTOR + 64);
  for (uint32_t i = 0; i < bytes / SECTOR; i++)
    fill_sector(buf_a + i * SECTOR, BIG_SECTOR + i);
  must(VIRTIO_BLK_T_OUT, BIG_SECTOR, buf_a, bytes, (int)nseg, "big write");
  printf("virtio-blk: wrote %u KiB at sector %u in %u segments\n",
         bytes >> 10, BIG_SECTOR, nseg);
  memset(buf_b, 0, bytes);
  // Read it back in a different split, to not mirror the write.
  uint32_t rseg = nseg > 1 ? nseg - 1 : 1;
  if (size_max && (bytes + rseg - 1) / rseg > size_max) rseg = nseg;
  must(VIRTIO_BLK_T_IN, BIG_SECTOR, buf_b, bytes, (int)rseg, "big read");
  if (memcmp(buf_a, buf_b, bytes)) fail("virtio-blk: big read differs");
  printf("virtio-blk: read back %u KiB ok\n", bytes >> 10);
}

static void flush(void) {
  if (!virtio_has(dev, VIRTIO_BLK_F_FLUSH)) {
    printf("virtio-blk: flush not offered\n");
    return;
  }
  must(VIRTIO_BLK_T_FLUSH, 0, NULL, 0, 0, "flush");
  printf("virtio-blk: flushed\n");
  if (cmdline_int("blk.hold", 0)) {
    printf("virtio-blk: holding\n");
    for (;;) cpu_relax();
  }
}

static void discard(void) {
  if (!virtio_has(dev, VIRTIO_BLK_F_DISCARD)) {
    printf("virtio-blk: discard not offered\n");
    return;
  }
  uint32_t max = virtio_cfg32(dev, CFG_MAX_DISCARD_SECTORS);
  uint32_t segs = virtio_cfg32(dev, CFG_MAX_DISCARD_SEG);
  uint32_t align = virtio_cfg32(dev, CFG_DISCARD_ALIGNMENT);
  uint32_t n = align > 8 ? align : 8;
  if (max == 0 || segs == 0)
    fail("virtio-blk: discard offered with max %u sectors, %u segments", max, segs);
  if (n > max) n = max;
  uint64_t sector = align ? DISCARD_SECTOR / align * align : DISCARD_SECTOR;
  if (sector + n > capacity) fail("virtio-blk: no room to discard %u sectors", n);
  struct virtio_blk_seg* s = (struct virtio_blk_seg*)buf_a;
  *s = (struct virtio_blk_seg){sector, n, 0};
  must(VIRTIO_BLK_T_DISCARD, 0, s, sizeof(*s), 1, "discard");
  printf("virtio-blk: discard ok\n");
}

static void write_zeroes(void) {
  if (!virtio_has(dev, VIRTIO_BLK_F_WRITE_ZEROES)) {
    printf("virtio-blk: write-zeroes not offered\n");
    return;
  }
  if (virtio_cfg32(dev, CFG_MAX_WRITE_ZEROES_SECTORS) == 0 ||
      virtio_cfg32(dev, CFG_MAX_WRITE_ZEROES_SEG) == 0)
    fail("virtio-blk: write-zeroes offered with zero limits");
  struct virtio_blk_seg* s = (struct virtio_blk_seg*)buf_a;
  *s = (struct virtio_blk_seg){8, 1, 0};
  must(VIRTIO_BLK_T_WRITE_ZEROES, 0, s, sizeof(*s), 1, "write-zeroes");
  memset(buf_b, 0xa5, SECTOR);
  must(VIRTIO_BLK_T_IN, 8, buf_b, SECTOR, 1, "read after write-zeroes");
  for (int i = 0; i < SECTOR; i++)
    if (buf_b[i]) fail("virtio-blk: sector 8 byte %d is %#x after write-zeroes",
                       i, buf_b[i] & 0xff);
  printf("virtio-blk: write-zeroes ok\n");
}

static void bad_requests(void) {
  must_fail(VIRTIO_BLK_T_IN, capacity, buf_b, SECTOR, VIRTIO_BLK_S_IOERR,
            "read past capacity");
  printf("virtio-blk: read past capacity -> ioerr\n");
  must_fail(VIRTIO_BLK_T_IN, capacity - 1, buf_b, 2 * SECTOR,
            VIRTIO_BLK_S_IOERR, "read across the end");
  printf("virtio-blk: read across the end -> ioerr\n");
  must_fail(0xff, 0, buf_b, SECTOR, VIRTIO_BLK_S_UNSUPP, "request type 0xff");
  printf("virtio-blk: unknown request type -> unsupp\n");
}

// One read with interrupts suppressed, completed by polling.
static void polled_read(void) {
  vq_set_interrupts(q, 0);
  must(VIRTIO_BLK_T_IN, 1, buf_b, SECTOR, 1, "polled read");
  vq_set_interrupts(q, 1);
  fill_sector(buf_a, 1);
  if (!(dev->features & VF(VIRTIO_BLK_F_RO)) && memcmp(buf_a, buf_b, SECTOR))
    fail("virtio-blk: polled read of sector 1 differs");
  printf("virtio-blk: polled read ok\n");
}

static void read_only(void) {
  printf("virtio-blk: read-only\n");
  must(VIRTIO_BLK_T_IN, 0, buf_b, 8 * SECTOR, 1, "read");
  printf("virtio-blk: read sectors 0-7\n");
  fill_sector(buf_a, 1);
  must_fail(VIRTIO_BLK_T_OUT, 1, buf_a, SECTOR, VIRTIO_BLK_S_IOERR,
            "write to a read-only disk");
  printf("virtio-blk: write refused -> ioerr\n");
}

static long blk_main(long unused) {
  (void)unused;
  setup();
  read_limits();
  buf_a = dma_alloc(BIG_BYTES, 4096);
  buf_b = dma_alloc(BIG_BYTES, 4096);
  get_id();
  if (virtio_has(dev, VIRTIO_BLK_F_RO)) {
    read_only();
  } else {
    small_writes();
    big_write();
    flush();
    discard();
    write_zeroes();
  }
  bad_requests();
  polled_read();
  virtio_report_irqs(dev, "virtio-blk");
  printf("virtio-blk: %u requests, %u notifies, %u suppressed\n", q->completed,
         q->notifies, q->notifies_skipped);
  if (virtio_status(dev) & VIRTIO_STATUS_NEEDS_RESET)
    fail("virtio-blk: device needs reset (status %#x)", virtio_status(dev));
  printf("virtio-blk: ok\n");
  return 0;
}

int main(void) {
  virtio_discover();
  tsc_per_ms();  // calibrate in ring 0 (uses the APIC timer)
  return (int)run_user(blk_main, 0, /*interrupts=*/1);
}
