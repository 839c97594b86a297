// virtio_misc: the small virtio devices.
//
// - virtio-rng (ID 4): two 64-byte reads from the requestq; neither may be
//   all zero and they must differ.
// - virtio-console (ID 3): one line, "virtio-console: hello from the
//   guest\n", on port 0's transmitq (queue 1). MULTIPORT is not negotiated,
//   so port 0 is the console; one receive buffer is posted on queue 0 and
//   left there (nothing is expected in it).
//
// A device that is not on the command line is reported as absent; the
// expect file decides whether that is fine. Runs in ring 3 like virtio_blk.
#include "virtio.h"

#define RNG_BYTES 64
#define CONSOLE_LINE "virtio-console: hello from the guest\n"

static int all_zero(const uint8_t* p, int n) {
  for (int i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

// Fills n bytes: the device may return fewer than asked per request.
static void rng_read(struct virtq* q, uint8_t* p, int n) {
  int got = 0, requests = 0;
  while (got < n) {
    if (++requests > 100) fail("virtio-rng: 100 requests gave %d bytes", got);
    struct vbuf b = {(uint64_t)(p + got), (uint32_t)(n - got), 1};
    int head = vq_submit(q, &b, 1, 0);
    if (head < 0) fail("virtio-rng: no ring space");
    vq_kick(q);
    uint32_t len;
    if (vq_wait(q, head, &len, 5000)) fail("virtio-rng: request timed out");
    got += (int)len;  // vq_wait checked len against the buffer
  }
}

static void rng_test(void) {
  struct virtio_dev* d = virtio_find(VIRTIO_ID_RNG, 0);
  if (!d) {
    printf("virtio-rng: absent\n");
    return;
  }
  virtio_init(d, 0, 1);
  uint8_t* a = dma_alloc(RNG_BYTES, 64);
  uint8_t* b = dma_alloc(RNG_BYTES, 64);
  rng_read(&d->vq[0], a, RNG_BYTES);
  rng_read(&d->vq[0], b, RNG_BYTES);
  if (all_zero(a, RNG_BYTES) || all_zero(b, RNG_BYTES))
    fail("virtio-rng: a read returned only zeros");
  if (!memcmp(a, b, RNG_BYTES)) fail("virtio-rng: two reads returned the same bytes");
  printf("virtio-rng: read %d bytes twice, they differ\n", RNG_BYTES);
  virtio_report_irqs(d, "virtio-rng");
  printf("virtio-rng: ok\n");
}

static void console_test(void) {
  struct virtio_dev* d = virtio_find(VIRTIO_ID_CONSOLE, 0);
  if (!d) {
    printf("virtio-console: absent\n");
    return;
  }
  virtio_init(d, 0, 2);  // receiveq0, transmitq0
  char* rx = dma_alloc(256, 64);
  struct vbuf rb = {(uint64_t)rx, 256, 1};
  if (vq_submit(&d->vq[0], &rb, 1, 0) < 0) fail("virtio-console: no rx space");
  vq_kick(&d->vq[0]);
  char* tx = dma_alloc(sizeof(CONSOLE_LINE), 64);
  memcpy(tx, CONSOLE_LINE, sizeof(CONSOLE_LINE) - 1);
  struct vbuf tb = {(uint64_t)tx, sizeof(CONSOLE_LINE) - 1, 0};
  int head = vq_submit(&d->vq[1], &tb, 1, 0);
  if (head < 0) fail("virtio-console: no tx space");
  vq_kick(&d->vq[1]);
  uint32_t len;
  if (vq_wait(&d->vq[1], head, &len, 5000)) fail("virtio-console: transmit timed out");
  printf("virtio-console: sent\n");
  virtio_report_irqs(d, "virtio-console");
  printf("virtio-console: ok\n");
}

static long misc_main(long unused) {
  (void)unused;
  rng_test();
  console_test();
  printf("virtio-misc: ok\n");
  return 0;
}

int main(void) {
  virtio_discover();
  tsc_per_ms();
  return (int)run_user(misc_main, 0, /*interrupts=*/1);
}
