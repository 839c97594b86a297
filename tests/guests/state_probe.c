// state_probe: a guest for snapshot/restore and migration tests. Round
// after round, in ring 3 with interrupts on, it
//   - dirties probe.dirty pages (default 64) of a probe.mib MiB area
//     (default 8) with a pattern of the round, keeps a checksum per page,
//     and checks every page of the area against its checksum once per
//     probe.verify rounds (default 8) and at the end;
//   - with a virtio-blk device: writes one sector of a 64-sector ring with
//     the round's pattern and reads the previous round's sector back;
//   - with a virtio-rng device: reads 16 bytes;
//   - prints `probe: round R gap_us G` (G: the longest time between two
//     consecutive TSC readings of the round's work loop, the downtime the
//     guest itself sees; a snapshot's or migration's pause shows here).
// After probe.rounds rounds (default 40; 0: forever) it prints
// `probe: done pages P blk B rng N` and exits 0. A restored or migrated
// guest must carry on with the next round and finish with every checksum
// intact: a page or sector that came back wrong is a FAIL naming it.
#include "virtio.h"

#define PAGE 4096
#define SECTOR 512
#define RING_SECTORS 64
#define BLK_BASE 2048  // first sector of the ring

static uint8_t* area;
static uint32_t* sums;
static uint64_t pages;
static struct virtq* blk_q;
static struct virtq* rng_q;
static char* sector_buf;
static uint8_t* rng_buf;
static uint64_t blk_ops, rng_ops;

static uint32_t checksum(const uint8_t* p, uint64_t n) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (uint64_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static void fill(uint8_t* p, uint64_t n, uint64_t round, uint64_t where) {
  uint64_t x = round * 0x9e3779b97f4a7c15ull ^ where;
  for (uint64_t i = 0; i < n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(p + i, &x, 8);
  }
}

static void verify_pages(void) {
  for (uint64_t p = 0; p < pages; p++) {
    if (checksum(area + p * PAGE, PAGE) != sums[p])
      fail("probe: page %lu of the area does not match its checksum", p);
  }
}

static void blk_round(uint64_t round) {
  uint64_t slot = round % RING_SECTORS;
  fill((uint8_t*)sector_buf, SECTOR, round, BLK_BASE + slot);
  int st = blk_request(blk_q, VIRTIO_BLK_T_OUT, BLK_BASE + slot, sector_buf, SECTOR, 1, 0);
  if (st != VIRTIO_BLK_S_OK) fail("probe: write of sector %lu: status %d", BLK_BASE + slot, st);
  if (round == 0) return;
  uint64_t prev = (round - 1) % RING_SECTORS;
  st = blk_request(blk_q, VIRTIO_BLK_T_IN, BLK_BASE + prev, sector_buf, SECTOR, 1, 0);
  if (st != VIRTIO_BLK_S_OK) fail("probe: read of sector %lu: status %d", BLK_BASE + prev, st);
  uint8_t want[SECTOR];
  fill(want, SECTOR, round - 1, BLK_BASE + prev);
  if (memcmp(want, sector_buf, SECTOR))
    fail("probe: sector %lu does not hold round %lu's data", BLK_BASE + prev, round - 1);
  blk_ops += 2;
}

static void rng_round(void) {
  struct vbuf b = {(uint64_t)rng_buf, 16, 1};
  int head = vq_submit(rng_q, &b, 1, 0);
  if (head < 0) fail("probe: rng ring full");
  vq_kick(rng_q);
  uint32_t len;
  if (vq_wait(rng_q, head, &len, 5000)) fail("probe: rng request timed out");
  if (len == 0 || len > 16) fail("probe: rng returned %u bytes", len);
  rng_ops++;
}

// Dirties the round's pages; returns the longest gap between two TSC
// readings, in TSC ticks.
static uint64_t dirty_round(uint64_t round, uint64_t dirty) {
  uint64_t last = rdtsc(), gap = 0;
  for (uint64_t k = 0; k < dirty; k++) {
    uint64_t p = (round * dirty + k) % pages;
    fill(area + p * PAGE, PAGE, round, p);
    sums[p] = checksum(area + p * PAGE, PAGE);
    uint64_t now = rdtsc();
    if (now - last > gap) gap = now - last;
    last = now;
  }
  return gap;
}

static long probe(long rounds) {
  uint64_t dirty = (uint64_t)cmdline_int("probe.dirty", 64);
  uint64_t verify = (uint64_t)cmdline_int("probe.verify", 8);
  uint64_t per_us = tsc_per_ms() / 1000;
  if (per_us == 0) per_us = 1;
  // In ring 3: kvm_pvm emulates ring-0 code instruction by instruction, and
  // this loop over 8 MiB took ~100 s there in ring 0.
  for (uint64_t p = 0; p < pages; p++) sums[p] = checksum(area + p * PAGE, PAGE);
  for (uint64_t r = 0; rounds == 0 || r < (uint64_t)rounds; r++) {
    uint64_t gap = dirty_round(r, dirty);
    if (blk_q) blk_round(r);
    if (rng_q) rng_round();
    if (verify && r % verify == verify - 1) verify_pages();
    printf("probe: round %lu gap_us %lu\n", r, gap / per_us);
  }
  verify_pages();
  printf("probe: done pages %lu blk %lu rng %lu\n", pages, blk_ops, rng_ops);
  return 0;
}

static void setup_devices(void) {
  virtio_discover();
  struct virtio_dev* blk = virtio_find(VIRTIO_ID_BLK, 0);
  if (blk) {
    virtio_init(blk, VF(VIRTIO_F_EVENT_IDX), 1);
    blk_q = &blk->vq[0];
    sector_buf = dma_alloc(SECTOR, SECTOR);
  }
  struct virtio_dev* rng = virtio_find(VIRTIO_ID_RNG, 0);
  if (rng) {
    virtio_init(rng, 0, 1);
    rng_q = &rng->vq[0];
    rng_buf = dma_alloc(16, 16);
  }
  printf("probe: blk %s, rng %s\n", blk ? "yes" : "no", rng ? "yes" : "no");
}

int main(void) {
  uint64_t mib = (uint64_t)cmdline_int("probe.mib", 8);
  pages = mib * 256;
  // Not zeroed: the ring-0 memset of 8 MiB took ~50 s under kvm_pvm; the
  // checksums are taken from whatever the pages hold.
  area = dma_reserve(pages * PAGE, PAGE);
  sums = dma_alloc(pages * sizeof(uint32_t), PAGE);
  setup_devices();
  tsc_per_ms();
  printf("probe: start, %lu pages\n", pages);
  return (int)run_user(probe, cmdline_int("probe.rounds", 40), /*interrupts=*/1);
}
