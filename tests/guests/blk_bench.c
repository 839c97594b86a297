// blk_bench: virtio-blk throughput from inside the guest, for bench/blk.
//
// Drives the first virtio-blk device (virtio-mmio, or virtio-pci with
// `virtio.transport=pci`) with four patterns, each for bench.secs seconds:
//   seqread 1m, seqwrite 1m   1 MiB requests at consecutive offsets
//                             (wrapping at the end of the span)
//   randread 4k, randwrite 4k 4 KiB requests at 4 KiB-aligned offsets from
//                             a fixed-seed xorshift64 PRNG (the same
//                             sequence on every run and every VMM)
// keeping bench.qd requests in flight. Completions are *polled* from the
// used ring with interrupts suppressed (VIRTQ_AVAIL_F_NO_INTERRUPT, or a
// used_event that is never reached) and the vCPU's IF clear: no interrupt
// is raised or delivered, so the figures measure the device path and not
// interrupt delivery (which kvm_pvm delays while a vCPU runs in ring 3).
// Time comes from the TSC (calibrated against the LAPIC timer in ring 0).
// The loop runs in ring 3, native on kvm_pvm hosts.
//
// Each request is the usual three-part chain (header, data, status byte),
// or one indirect descriptor when the device offers VIRTIO_F_INDIRECT_DESC
// (as Linux would use it). After collecting every completion the guest
// refills the free slots and notifies once (vq_kick: honours NO_NOTIFY and
// EVENT_IDX).
//
// FLUSH is negotiated (as Linux does; a device without it is to write
// through, and QEMU then fdatasyncs after writes) but never sent: writes
// land in the host's page cache, like reads come from it.
//
// Switches (kernel command line):
//   bench.secs=N      seconds per pattern (3)
//   bench.qd=N        requests in flight (32; capped by the queue size)
//   bench.span_mib=N  use only the first N MiB of the disk (whole disk)
//   bench.only=NAME   run one pattern: seqread, seqwrite, randread, randwrite
//   bench.indirect=0|1, bench.event_idx=0|1  negotiate when offered (1)
//
// Output:
//   blk-bench: <where>, queue size <q>, capacity <sectors> sectors
//   blk-bench: indirect on|off, event_idx on|off, qd <n>, span <MiB> MiB, <s> s per pattern, polled
//   blk-bench: <pattern> <1m|4k> qd<n>: <iops> iops <MiB/s> MiB/s (<reqs> requests in <ms> ms, <k> notifies)
//   blk-bench: ok
// A request that completes with a status other than OK FAILs.
#include "virtio.h"

#define SECTOR 512
#define QUEUE_LIMIT 256
#define MAX_QD 256
#define CFG_CAPACITY 0
#define CFG_SIZE_MAX 8
#define CFG_SEG_MAX 12

struct slot {
  struct virtio_blk_req_hdr hdr;  // 16 bytes
  uint8_t status;
  uint8_t pad[15];
};

struct pattern {
  const char* name;
  const char* size_name;
  uint32_t type;
  uint32_t bytes;
  int random;
};

static const struct pattern patterns[] = {
    {"seqread", "1m", VIRTIO_BLK_T_IN, 1u << 20, 0},
    {"seqwrite", "1m", VIRTIO_BLK_T_OUT, 1u << 20, 0},
    {"randread", "4k", VIRTIO_BLK_T_IN, 4096, 1},
    {"randwrite", "4k", VIRTIO_BLK_T_OUT, 4096, 1},
};

static struct virtio_dev* dev;
static struct virtq* q;
static int indirect;
static uint32_t qd;
static uint64_t span;  // bytes
static struct slot* slots;
static char* data[MAX_QD];
static int16_t head_slot[VIRTQ_MAX_SIZE];  // descriptor head -> slot

static uint64_t rng_state;
static uint64_t xorshift64(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

static uint64_t seq_next;
static uint64_t next_offset(const struct pattern* p) {
  if (p->random) return xorshift64() % (span / p->bytes) * p->bytes;
  uint64_t off = seq_next;
  seq_next += p->bytes;
  if (seq_next + p->bytes > span) seq_next = 0;
  return off;
}

static void submit(const struct pattern* p, int s) {
  slots[s].hdr.type = p->type;
  slots[s].hdr.reserved = 0;
  slots[s].hdr.sector = next_offset(p) / SECTOR;
  slots[s].status = 0xff;
  struct vbuf b[3] = {
      {(uint64_t)&slots[s].hdr, sizeof(slots[s].hdr), 0},
      {(uint64_t)data[s], p->bytes, p->type == VIRTIO_BLK_T_IN},
      {(uint64_t)&slots[s].status, 1, 1},
  };
  int head = vq_submit(q, b, 3, indirect);
  if (head < 0) fail("blk-bench: no ring space for slot %d", s);
  head_slot[head] = (int16_t)s;
}

static void run_pattern(const struct pattern* p, uint32_t secs) {
  rng_state = 0x6b696e646c696e67ull;  // "kindling": the same offsets every run
  seq_next = 0;
  for (int i = 0; i < VIRTQ_MAX_SIZE; i++) head_slot[i] = -1;
  uint32_t notifies0 = q->notifies;
  uint64_t per_ms = tsc_per_ms();
  uint64_t start = rdtsc(), stop = start + per_ms * 1000 * secs;
  uint64_t done = 0, idle_since = start;
  uint32_t inflight = 0;
  for (uint32_t s = 0; s < qd; s++) submit(p, (int)s);
  inflight = qd;
  vq_kick(q);
  uint64_t now = start;
  while (inflight) {
    int refilled = 0;
    uint32_t len;
    int head;
    now = rdtsc();
    while ((head = vq_next_used(q, &len)) >= 0) {
      int s = head_slot[head];
      if (s < 0) fail("blk-bench: completion for unknown head %d", head);
      head_slot[head] = -1;
      if (slots[s].status != VIRTIO_BLK_S_OK)
        fail("blk-bench: %s request at sector %lu: status %u", p->name,
             slots[s].hdr.sector, slots[s].status);
      done++;
      inflight--;
      if (now < stop) {
        submit(p, s);
        inflight++;
        refilled = 1;
      }
    }
    if (refilled) {
      vq_kick(q);
      idle_since = now;
    } else if (now - idle_since > per_ms * 5000) {
      fail("blk-bench: %s: %u requests outstanding for 5 s", p->name, inflight);
    } else {
      cpu_relax();
    }
  }
  now = rdtsc();
  uint64_t us = (now - start) * 1000 / per_ms;
  if (us == 0) us = 1;
  uint64_t iops = done * 1000000 / us;
  uint64_t kib_s = done * (p->bytes / 1024) * 1000000 / us;
  printf("blk-bench: %s %s qd%u: %lu iops %lu.%02lu MiB/s (%lu requests in %lu ms, "
         "%u notifies)\n", p->name, p->size_name, qd, iops, kib_s / 1024,
         kib_s % 1024 * 100 / 1024, done, us / 1000, q->notifies - notifies0);
}

static long bench_main(long unused) {
  (void)unused;
  dev = virtio_find(VIRTIO_ID_BLK, 0);
  if (!dev) fail("blk-bench: no virtio-blk device (cmdline: %s)", boot_cmdline());
  uint64_t want = VF(VIRTIO_BLK_F_SIZE_MAX) | VF(VIRTIO_BLK_F_SEG_MAX) |
                  VF(VIRTIO_BLK_F_RO) | VF(VIRTIO_BLK_F_BLK_SIZE) |
                  // As Linux does: without FLUSH a device is to write
                  // through (QEMU then fdatasyncs after writes).
                  VF(VIRTIO_BLK_F_FLUSH);
  if (cmdline_int("bench.indirect", 1)) want |= VF(VIRTIO_F_INDIRECT_DESC);
  if (cmdline_int("bench.event_idx", 1)) want |= VF(VIRTIO_F_EVENT_IDX);
  virtio_set_queue_limit(QUEUE_LIMIT);
  virtio_init(dev, want, 1);
  q = &dev->vq[0];
  indirect = virtio_has(dev, VIRTIO_F_INDIRECT_DESC);
  dev->quiet_ok = 1;
  vq_set_interrupts(q, 0);
  if (virtio_has(dev, VIRTIO_BLK_F_RO)) fail("blk-bench: the disk is read-only");
  uint64_t capacity = virtio_cfg64(dev, CFG_CAPACITY);
  if (virtio_has(dev, VIRTIO_BLK_F_SIZE_MAX) &&
      virtio_cfg32(dev, CFG_SIZE_MAX) < (1u << 20))
    fail("blk-bench: size_max %u is below 1 MiB", virtio_cfg32(dev, CFG_SIZE_MAX));
  if (virtio_has(dev, VIRTIO_BLK_F_SEG_MAX) && virtio_cfg32(dev, CFG_SEG_MAX) < 1)
    fail("blk-bench: seg_max 0");

  span = capacity * SECTOR;
  long span_mib = cmdline_int("bench.span_mib", 0);
  if (span_mib > 0 && (uint64_t)span_mib << 20 < span) span = (uint64_t)span_mib << 20;
  span &= ~((1ull << 20) - 1);
  if (span < (2u << 20)) fail("blk-bench: the disk (span) is below 2 MiB");

  qd = (uint32_t)cmdline_int("bench.qd", 32);
  uint32_t per_req = indirect ? 1 : 3;
  if (qd > q->size / per_req) qd = q->size / per_req;
  if (qd > MAX_QD) qd = MAX_QD;
  if (qd < 1) qd = 1;
  uint32_t secs = (uint32_t)cmdline_int("bench.secs", 3);
  char only[16] = "";
  cmdline_str("bench.only", only, sizeof(only));

  slots = dma_alloc(sizeof(*slots) * qd, 64);
  for (uint32_t s = 0; s < qd; s++) data[s] = dma_alloc(1u << 20, 4096);  // touched: no first-use faults in the VMM

  char where[48];
  virtio_where(dev, where, sizeof(where));
  printf("blk-bench: %s, queue size %u, capacity %lu sectors\n", where, q->size,
         capacity);
  printf("blk-bench: indirect %s, event_idx %s, qd %u, span %lu MiB, %u s per "
         "pattern, polled\n", indirect ? "on" : "off",
         virtio_has(dev, VIRTIO_F_EVENT_IDX) ? "on" : "off", qd, span >> 20, secs);
  int ran = 0;
  for (unsigned i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
    const char* name = patterns[i].name;
    if (only[0] && (strlen(only) != strlen(name) || memcmp(only, name, strlen(name))))
      continue;
    run_pattern(&patterns[i], secs);
    ran++;
  }
  if (!ran) fail("blk-bench: bench.only=%s matches no pattern", only);
  if (virtio_status(dev) & VIRTIO_STATUS_NEEDS_RESET)
    fail("blk-bench: device needs reset (status %#x)", virtio_status(dev));
  printf("blk-bench: ok\n");
  return 0;
}

int main(void) {
  virtio_discover();
  tsc_per_ms();  // calibrate in ring 0 (uses the APIC timer)
  return (int)run_user(bench_main, 0, /*interrupts=*/0);
}
