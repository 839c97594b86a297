// virtio_gpu: a 2D virtio-gpu driver (virtio 1.2, 5.7) of our own.
//
// - Reads the config (num_scanouts), GET_DISPLAY_INFO (scanout 0's mode)
//   and, with VIRTIO_GPU_F_EDID, GET_EDID (header and checksum).
// - Creates a resource of the display's size (B8G8R8X8), backs it with
//   guest memory in two entries, draws the test pattern into it (pixel
//   (x, y): R = 4x, G = 4y, B = x ^ y, each mod 256), transfers it, sets it
//   on scanout 0 and flushes with a fence (the response must carry it).
//   Prints "virtio-gpu: drawn WxH"; the host takes its screenshot then.
// - Hostile commands and the errors they must get: resource id 0, a
//   transfer box past the resource, scanout 5, a flush of a resource that
//   does not exist, backing outside RAM, an unknown command.
// - MOVE_CURSOR on the cursor queue.
// - Waits gpu.hold_ms (default 0) before it exits, so a host that polls
//   for the picture (QEMU's screendump) finds it.
// - gpu.bench_frames=N (bench/gpu): instead of the hostile commands, N
//   frames of a full-screen TRANSFER_TO_HOST_2D + RESOURCE_FLUSH (one row
//   redrawn before each), timed with the TSC: "virtio-gpu: bench N frames
//   WxH in T us, F fps".
// Runs in ring 3 like virtio_blk.
#include "virtio.h"

#define VIRTIO_ID_GPU 16
#define GPU_F_EDID 1

#define CMD_GET_DISPLAY_INFO 0x0100
#define CMD_RESOURCE_CREATE_2D 0x0101
#define CMD_SET_SCANOUT 0x0103
#define CMD_RESOURCE_FLUSH 0x0104
#define CMD_TRANSFER_TO_HOST_2D 0x0105
#define CMD_RESOURCE_ATTACH_BACKING 0x0106
#define CMD_GET_EDID 0x010a
#define CMD_MOVE_CURSOR 0x0301
#define RESP_OK_NODATA 0x1100
#define RESP_OK_DISPLAY_INFO 0x1101
#define RESP_OK_EDID 0x1104
#define RESP_ERR_UNSPEC 0x1200
#define RESP_ERR_INVALID_SCANOUT_ID 0x1202
#define RESP_ERR_INVALID_RESOURCE_ID 0x1203
#define RESP_ERR_INVALID_PARAMETER 0x1205
#define FLAG_FENCE 1
#define FORMAT_B8G8R8X8 2
#define MAX_SIDE 2048  // the guest draws at most this much of a side

struct hdr {
  uint32_t type, flags;
  uint64_t fence_id;
  uint32_t ctx_id;
  uint8_t ring_idx, pad[3];
};
struct rect {
  uint32_t x, y, width, height;
};
struct display_info {
  struct hdr h;
  struct {
    struct rect r;
    uint32_t enabled, flags;
  } pmodes[16];
};
struct edid_resp {
  struct hdr h;
  uint32_t size, pad;
  uint8_t edid[1024];
};
struct create_2d {
  struct hdr h;
  uint32_t resource_id, format, width, height;
};
struct mem_entry {
  uint64_t addr;
  uint32_t length, pad;
};
struct attach {
  struct hdr h;
  uint32_t resource_id, nr_entries;
  struct mem_entry e[2];
};
struct transfer {
  struct hdr h;
  struct rect r;
  uint64_t offset;
  uint32_t resource_id, pad;
};
struct scanout {
  struct hdr h;
  struct rect r;
  uint32_t scanout_id, resource_id;
};
struct flush {
  struct hdr h;
  struct rect r;
  uint32_t resource_id, pad;
};
struct cursor {
  struct hdr h;
  uint32_t scanout_id, x, y, pad;
  uint32_t resource_id, hot_x, hot_y, pad2;
};

static struct virtio_dev* dev;
static uint8_t* req_buf;
static uint8_t* resp_buf;

// Sends `len` bytes of `cmd` on queue q, waits for the response (at most
// resp_len bytes); returns the response header (in resp_buf).
static struct hdr* command(int q, const void* cmd, uint32_t len, uint32_t resp_len) {
  memcpy(req_buf, cmd, len);
  memset(resp_buf, 0, resp_len);
  struct vbuf b[2] = {{(uint64_t)req_buf, len, 0}, {(uint64_t)resp_buf, resp_len, 1}};
  int head = vq_submit(&dev->vq[q], b, 2, 0);
  if (head < 0) fail("virtio-gpu: no ring space");
  vq_kick(&dev->vq[q]);
  uint32_t used;
  if (vq_wait(&dev->vq[q], head, &used, 5000)) fail("virtio-gpu: command %#x timed out",
                                                     ((const struct hdr*)cmd)->type);
  struct hdr* h = (struct hdr*)resp_buf;
  if (q == 0 && used < sizeof(struct hdr)) fail("virtio-gpu: response of %u bytes", used);
  return h;
}

static void expect(const char* what, uint32_t got, uint32_t want) {
  if (got != want) fail("virtio-gpu: %s: response %#x, expected %#x", what, got, want);
  printf("virtio-gpu: %s -> %#x\n", what, got);
}

static void display(uint32_t* w, uint32_t* h) {
  struct hdr c = {CMD_GET_DISPLAY_INFO, 0, 0, 0, 0, {0}};
  struct display_info* d = (struct display_info*)command(0, &c, sizeof(c), sizeof(*d));
  if (d->h.type != RESP_OK_DISPLAY_INFO) fail("virtio-gpu: display info %#x", d->h.type);
  if (!d->pmodes[0].enabled) fail("virtio-gpu: scanout 0 is not enabled");
  *w = d->pmodes[0].r.width;
  *h = d->pmodes[0].r.height;
  printf("virtio-gpu: display 0 is %ux%u\n", *w, *h);
}

static void edid(void) {
  if (!virtio_has(dev, GPU_F_EDID)) {
    printf("virtio-gpu: no EDID\n");
    return;
  }
  struct {
    struct hdr h;
    uint32_t scanout, pad;
  } c = {{CMD_GET_EDID, 0, 0, 0, 0, {0}}, 0, 0};
  struct edid_resp* e = (struct edid_resp*)command(0, &c, sizeof(c), sizeof(*e));
  if (e->h.type != RESP_OK_EDID) fail("virtio-gpu: GET_EDID %#x", e->h.type);
  static const uint8_t header[8] = {0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0};
  if (e->size < 128 || e->size > 1024 || memcmp(e->edid, header, 8))
    fail("virtio-gpu: EDID of %u bytes without its header", e->size);
  uint8_t sum = 0;
  for (int i = 0; i < 128; i++) sum += e->edid[i];
  if (sum) fail("virtio-gpu: EDID checksum %#x", sum);
  printf("virtio-gpu: edid %u bytes, version %u.%u, checksum ok\n", e->size, e->edid[18],
         e->edid[19]);
}

static uint32_t create(uint32_t id, uint32_t w, uint32_t h) {
  struct create_2d c = {{CMD_RESOURCE_CREATE_2D, 0, 0, 0, 0, {0}}, id, FORMAT_B8G8R8X8, w, h};
  return command(0, &c, sizeof(c), sizeof(struct hdr))->type;
}

static uint32_t attach(uint32_t id, uint64_t a0, uint32_t l0, uint64_t a1, uint32_t l1) {
  struct attach c = {{CMD_RESOURCE_ATTACH_BACKING, 0, 0, 0, 0, {0}}, id, 2,
                     {{a0, l0, 0}, {a1, l1, 0}}};
  return command(0, &c, sizeof(c), sizeof(struct hdr))->type;
}

static uint32_t transfer(uint32_t id, struct rect r, uint64_t offset) {
  struct transfer c = {{CMD_TRANSFER_TO_HOST_2D, 0, 0, 0, 0, {0}}, r, offset, id, 0};
  return command(0, &c, sizeof(c), sizeof(struct hdr))->type;
}

static uint32_t set_scanout(uint32_t scanout_id, uint32_t id, struct rect r) {
  struct scanout c = {{CMD_SET_SCANOUT, 0, 0, 0, 0, {0}}, r, scanout_id, id};
  return command(0, &c, sizeof(c), sizeof(struct hdr))->type;
}

static void draw(uint32_t* fb, uint32_t w, uint32_t h) {
  for (uint32_t y = 0; y < h; y++) {
    for (uint32_t x = 0; x < w; x++) {
      uint32_t r = (x * 4) & 0xff, g = (y * 4) & 0xff, b = (x ^ y) & 0xff;
      fb[y * w + x] = (r << 16) | (g << 8) | b;  // bytes B, G, R, X
    }
  }
}

static uint32_t* fb;

// Draws, shows and flushes resource 1 (fenced).
static void show(uint32_t w, uint32_t h) {
  uint32_t bytes = w * h * 4, half = bytes / 2 + 12;  // split mid-row
  fb = dma_alloc(bytes, 4096);
  expect("create 1", create(1, w, h), RESP_OK_NODATA);
  expect("attach 1", attach(1, (uint64_t)fb, half, (uint64_t)fb + half, bytes - half),
         RESP_OK_NODATA);
  draw(fb, w, h);
  struct rect full = {0, 0, w, h};
  expect("transfer 1", transfer(1, full, 0), RESP_OK_NODATA);
  expect("scanout 0", set_scanout(0, 1, full), RESP_OK_NODATA);
  struct flush f = {{CMD_RESOURCE_FLUSH, FLAG_FENCE, 0x5eed, 0, 0, {0}}, full, 1, 0};
  struct hdr* r = command(0, &f, sizeof(f), sizeof(struct hdr));
  if (r->type != RESP_OK_NODATA || !(r->flags & FLAG_FENCE) || r->fence_id != 0x5eed)
    fail("virtio-gpu: fenced flush: type %#x flags %#x fence %#lx", r->type, r->flags,
         (unsigned long)r->fence_id);
  printf("virtio-gpu: flush fenced\n");
  printf("virtio-gpu: drawn %ux%u\n", w, h);
}

static void hostile(uint32_t w, uint32_t h) {
  expect("create id 0", create(0, 4, 4), RESP_ERR_INVALID_RESOURCE_ID);
  struct rect past = {1, 0, w, h};
  expect("transfer past the resource", transfer(1, past, 0), RESP_ERR_INVALID_PARAMETER);
  struct rect full = {0, 0, w, h};
  expect("scanout 5", set_scanout(5, 1, full), RESP_ERR_INVALID_SCANOUT_ID);
  struct flush f = {{CMD_RESOURCE_FLUSH, 0, 0, 0, 0, {0}}, full, 99, 0};
  expect("flush of resource 99", command(0, &f, sizeof(f), sizeof(struct hdr))->type,
         RESP_ERR_INVALID_RESOURCE_ID);
  expect("create 2", create(2, 4, 4), RESP_OK_NODATA);
  expect("backing outside RAM", attach(2, 0xfff000000000ull, 64, 0xfff000001000ull, 64),
         RESP_ERR_UNSPEC);
  struct hdr u = {0x0777, 0, 0, 0, 0, {0}};
  expect("unknown command", command(0, &u, sizeof(u), sizeof(struct hdr))->type,
         RESP_ERR_UNSPEC);
}

static void bench(uint32_t w, uint32_t h, long frames) {
  struct rect full = {0, 0, w, h};
  struct flush f = {{CMD_RESOURCE_FLUSH, 0, 0, 0, 0, {0}}, full, 1, 0};
  uint64_t t0 = rdtsc();
  for (long i = 0; i < frames; i++) {
    uint32_t* row = fb + (uint32_t)(i % h) * w;
    for (uint32_t x = 0; x < w; x++) row[x] = ~row[x];
    if (transfer(1, full, 0) != RESP_OK_NODATA) fail("virtio-gpu: bench transfer %ld", i);
    if (command(0, &f, sizeof(f), sizeof(struct hdr))->type != RESP_OK_NODATA)
      fail("virtio-gpu: bench flush %ld", i);
  }
  uint64_t us = (rdtsc() - t0) * 1000 / tsc_per_ms();
  if (us == 0) us = 1;
  uint64_t centi_fps = (uint64_t)frames * 100000000ull / us;
  printf("virtio-gpu: bench %ld frames %ux%u in %lu us, %lu.%02lu fps\n", frames, w, h,
         (unsigned long)us, (unsigned long)(centi_fps / 100), (unsigned long)(centi_fps % 100));
}

static void move_cursor(void) {
  struct cursor c = {{CMD_MOVE_CURSOR, 0, 0, 0, 0, {0}}, 0, 10, 20, 0, 0, 0, 0, 0};
  command(1, &c, sizeof(c), sizeof(struct hdr));
  printf("virtio-gpu: cursor moved\n");
}

static long gpu_main(long unused) {
  (void)unused;
  dev = virtio_find(VIRTIO_ID_GPU, 0);
  if (!dev) fail("virtio-gpu: absent");
  virtio_init(dev, VF(GPU_F_EDID), 2);  // controlq, cursorq
  printf("virtio-gpu: %u scanouts, %u capsets\n", virtio_cfg32(dev, 8), virtio_cfg32(dev, 12));
  req_buf = dma_alloc(4096, 4096);
  resp_buf = dma_alloc(4096, 4096);
  uint32_t w, h;
  display(&w, &h);
  edid();
  if (w > MAX_SIDE) w = MAX_SIDE;
  if (h > MAX_SIDE) h = MAX_SIDE;
  show(w, h);
  long frames = cmdline_int("gpu.bench_frames", 0);
  if (frames > 0) {
    bench(w, h, frames);
  } else {
    hostile(w, h);
    move_cursor();
  }
  virtio_report_irqs(dev, "virtio-gpu");
  printf("virtio-gpu: ok\n");
  long hold = cmdline_int("gpu.hold_ms", 0);
  uint64_t until = rdtsc() + (uint64_t)hold * tsc_per_ms();
  while (rdtsc() < until) {
  }
  return 0;
}

int main(void) {
  virtio_discover();
  tsc_per_ms();
  return (int)run_user(gpu_main, 0, /*interrupts=*/1);
}
