// virtio driver library for the test guests; see virtio.h. Written from
// the virtio 1.2 specification (4.2.2 MMIO registers, 2.7 split queues,
// 3.1.1 initialisation).
#include "virtio.h"

// ---- virtio-mmio version 2 registers (spec 4.2.2) ----
#define MMIO_MAGIC 0x000
#define MMIO_VERSION 0x004
#define MMIO_DEVICE_ID 0x008
#define MMIO_DEVICE_FEATURES 0x010
#define MMIO_DEVICE_FEATURES_SEL 0x014
#define MMIO_DRIVER_FEATURES 0x020
#define MMIO_DRIVER_FEATURES_SEL 0x024
#define MMIO_QUEUE_SEL 0x030
#define MMIO_QUEUE_NUM_MAX 0x034
#define MMIO_QUEUE_NUM 0x038
#define MMIO_QUEUE_READY 0x044
#define MMIO_QUEUE_NOTIFY 0x050
#define MMIO_INTERRUPT_STATUS 0x060
#define MMIO_INTERRUPT_ACK 0x064
#define MMIO_STATUS 0x070
#define MMIO_QUEUE_DESC_LOW 0x080
#define MMIO_QUEUE_DESC_HIGH 0x084
#define MMIO_QUEUE_DRIVER_LOW 0x090
#define MMIO_QUEUE_DRIVER_HIGH 0x094
#define MMIO_QUEUE_DEVICE_LOW 0x0a0
#define MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define MMIO_CONFIG_GENERATION 0x0fc
#define MMIO_CONFIG 0x100
#define MMIO_MAGIC_VALUE 0x74726976u  // "virt"

#define IOAPIC_BASE 0xfec00000ul
#define GIB4 (4ull << 30)

static struct virtio_dev devices[VIRTIO_MAX_DEVICES];
static int ndevices = -1;  // -1: not discovered yet

static inline void compiler_barrier(void) { __asm__ volatile("" ::: "memory"); }
// Orders our avail-ring stores before the loads of used->flags or
// avail_event that decide whether to notify (store-load needs a fence).
static inline void full_barrier(void) { __asm__ volatile("mfence" ::: "memory"); }

static inline uint32_t rd32(struct virtio_dev* d, uint32_t off) {
  return *(volatile uint32_t*)(d->base + off);
}
static inline void wr32(struct virtio_dev* d, uint32_t off, uint32_t v) {
  *(volatile uint32_t*)(d->base + off) = v;
}

static uint64_t deadline_after(uint32_t ms) {
  return rdtsc() + tsc_per_ms() * ms;
}

// ---- command line ----

// Parses decimal or 0x hex; returns the end, or NULL without digits or on
// overflow.
static const char* parse_u64(const char* s, uint64_t* out) {
  uint64_t v = 0;
  int digits = 0, hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
  if (hex) s += 2;
  for (;; s++, digits++) {
    int c = *s, dv;
    if (c >= '0' && c <= '9')
      dv = c - '0';
    else if (hex && c >= 'a' && c <= 'f')
      dv = c - 'a' + 10;
    else if (hex && c >= 'A' && c <= 'F')
      dv = c - 'A' + 10;
    else
      break;
    uint64_t base = hex ? 16 : 10;
    if (v > (~0ull - dv) / base) return NULL;
    v = v * base + dv;
  }
  if (!digits) return NULL;
  *out = v;
  return s;
}

// Finds the token `key` or `key=...`; returns what follows the key
// ("" or "=..."), or NULL.
static const char* cmdline_find(const char* key) {
  const char* s = boot_cmdline();
  size_t n = strlen(key);
  while (*s) {
    while (*s == ' ') s++;
    const char* tok = s;
    while (*s && *s != ' ') s++;
    if ((size_t)(s - tok) >= n && memcmp(tok, key, n) == 0 &&
        (tok[n] == '=' || tok[n] == ' ' || tok[n] == '\0'))
      return tok + n;
  }
  return NULL;
}

long cmdline_int(const char* key, long dflt) {
  const char* v = cmdline_find(key);
  if (!v) return dflt;
  if (*v != '=') return 1;
  uint64_t x;
  const char* end = parse_u64(v + 1, &x);
  if (!end || (*end && *end != ' ')) fail("bad number in %s%s", key, v);
  return (long)x;
}

int cmdline_str(const char* key, char* buf, size_t size) {
  const char* v = cmdline_find(key);
  if (!v || !size) return 0;
  size_t n = 0;
  if (*v == '=')
    for (v++; v[n] && v[n] != ' ' && n + 1 < size; n++) buf[n] = v[n];
  buf[n] = '\0';
  return 1;
}

// ---- discovery ----

const char* virtio_id_name(uint32_t id) {
  switch (id) {
    case VIRTIO_ID_NET: return "net";
    case VIRTIO_ID_BLK: return "blk";
    case VIRTIO_ID_CONSOLE: return "console";
    case VIRTIO_ID_RNG: return "rng";
    default: return "other";
  }
}

static uint32_t ioapic_read(uint32_t reg) {
  *(volatile uint32_t*)IOAPIC_BASE = reg;
  return *(volatile uint32_t*)(IOAPIC_BASE + 0x10);
}
static void ioapic_write(uint32_t reg, uint32_t v) {
  *(volatile uint32_t*)IOAPIC_BASE = reg;
  *(volatile uint32_t*)(IOAPIC_BASE + 0x10) = v;
}

// Pin `irq` -> `vector`: fixed delivery, physical destination (this CPU),
// active high, edge triggered, unmasked. Edge suits virtio-mmio: the line
// rises when InterruptStatus becomes non-zero and falls on the ACK.
static void ioapic_route(int irq, int vector) {
  uint32_t max_entry = (ioapic_read(1) >> 16) & 0xff;
  if ((uint32_t)irq > max_entry)
    fail("virtio: irq %d beyond the IOAPIC's %u pins", irq, max_entry + 1);
  ioapic_write(0x10 + 2 * irq + 1, lapic_id() << 24);
  ioapic_write(0x10 + 2 * irq, (uint32_t)vector);
}

static void virtio_irq(struct irq_frame* f) {
  int irq = (int)f->vector - VIRTIO_VECTOR_BASE, any = 0;
  struct virtio_dev* empty = NULL;
  for (int i = 0; i < ndevices; i++) {
    struct virtio_dev* d = &devices[i];
    if (d->irq != irq) continue;
    uint32_t isr = rd32(d, MMIO_INTERRUPT_STATUS);
    if (!isr) {
      empty = d;
      continue;
    }
    wr32(d, MMIO_INTERRUPT_ACK, isr);
    any = 1;
    if (isr & 1) d->irqs++;
    if (isr & 2) d->config_irqs++;
  }
  if (!any && empty) empty->empty_irqs++;
  lapic_eoi();
}

static void add_device(uint64_t base, uint64_t size, uint64_t irq) {
  if (size < MMIO_CONFIG || base >= GIB4 || size > GIB4 - base || (base & 3))
    fail("virtio: bad mmio window %#lx size %#lx", base, size);
  if (irq >= 256 - VIRTIO_VECTOR_BASE - 1)
    fail("virtio: bad irq %lu for %#lx", irq, base);
  struct virtio_dev tmp = {.base = base, .size = (uint32_t)size};
  if (rd32(&tmp, MMIO_MAGIC) != MMIO_MAGIC_VALUE) return;
  uint32_t id = rd32(&tmp, MMIO_DEVICE_ID);
  if (id == 0) return;  // an empty transport slot
  uint32_t version = rd32(&tmp, MMIO_VERSION);
  if (version != 2)
    fail("virtio: device %u at %#lx has mmio version %u, want 2 (legacy "
         "virtio-mmio is not supported; QEMU: -global "
         "virtio-mmio.force-legacy=false)", id, base, version);
  for (int i = 0; i < ndevices; i++)
    if (devices[i].base == base) return;  // listed twice
  if (ndevices == VIRTIO_MAX_DEVICES)
    fail("virtio: more than %d devices", VIRTIO_MAX_DEVICES);
  struct virtio_dev* d = &devices[ndevices++];
  *d = tmp;
  d->irq = (int)irq;
  d->device_id = id;
  d->version = version;
}

// One `virtio_mmio.device=<size>[K|M|G]@<addr>:<irq>` value.
static void parse_mmio_entry(const char* s) {
  uint64_t size, addr, irq;
  s = parse_u64(s, &size);
  if (s && (*s == 'K' || *s == 'k')) size <<= 10, s++;
  else if (s && (*s == 'M' || *s == 'm')) size <<= 20, s++;
  else if (s && (*s == 'G' || *s == 'g')) size <<= 30, s++;
  if (!s || *s++ != '@' || !(s = parse_u64(s, &addr)) || *s++ != ':' ||
      !(s = parse_u64(s, &irq)))
    fail("virtio: cannot parse a virtio_mmio.device= entry");
  add_device(addr, size, irq);
}

int virtio_discover(void) {
  if (ndevices >= 0) return ndevices;
  ndevices = 0;
  static const char key[] = "virtio_mmio.device=";
  const char* s = boot_cmdline();
  while (*s) {
    while (*s == ' ') s++;
    if (memcmp(s, key, sizeof(key) - 1) == 0) parse_mmio_entry(s + sizeof(key) - 1);
    while (*s && *s != ' ') s++;
  }
  lapic_enable();
  for (int i = 0; i < ndevices; i++) {
    set_irq_handler(VIRTIO_VECTOR_BASE + devices[i].irq, virtio_irq);
    ioapic_route(devices[i].irq, VIRTIO_VECTOR_BASE + devices[i].irq);
  }
  return ndevices;
}

struct virtio_dev* virtio_find(uint32_t device_id, int nth) {
  for (int i = 0; i < ndevices; i++)
    if (devices[i].device_id == device_id && nth-- == 0) return &devices[i];
  return NULL;
}

// ---- initialisation ----

uint32_t virtio_status(struct virtio_dev* d) { return rd32(d, MMIO_STATUS); }

int virtio_reset(struct virtio_dev* d) {
  wr32(d, MMIO_STATUS, 0);
  uint64_t deadline = deadline_after(1000);
  while (rd32(d, MMIO_STATUS) != 0)
    if (rdtsc() > deadline) return -1;
  for (int i = 0; i < VIRTIO_MAX_QUEUES; i++) d->vq[i].size = 0;
  d->nvq = 0;
  return 0;
}

static void add_status(struct virtio_dev* d, uint32_t bits) {
  wr32(d, MMIO_STATUS, rd32(d, MMIO_STATUS) | bits);
}

void virtio_begin(struct virtio_dev* d, uint64_t wanted) {
  const char* name = virtio_id_name(d->device_id);
  if (virtio_reset(d)) fail("virtio-%s: status did not read 0 after reset", name);
  add_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
  add_status(d, VIRTIO_STATUS_DRIVER);
  wr32(d, MMIO_DEVICE_FEATURES_SEL, 0);
  uint64_t lo = rd32(d, MMIO_DEVICE_FEATURES);
  wr32(d, MMIO_DEVICE_FEATURES_SEL, 1);
  uint64_t hi = rd32(d, MMIO_DEVICE_FEATURES);
  d->offered = hi << 32 | lo;
  if (!(d->offered & VF(VIRTIO_F_VERSION_1)))
    fail("virtio-%s: VIRTIO_F_VERSION_1 not offered (features %#lx)", name,
         d->offered);
  d->features = (d->offered & wanted) | VF(VIRTIO_F_VERSION_1);
  wr32(d, MMIO_DRIVER_FEATURES_SEL, 0);
  wr32(d, MMIO_DRIVER_FEATURES, (uint32_t)d->features);
  wr32(d, MMIO_DRIVER_FEATURES_SEL, 1);
  wr32(d, MMIO_DRIVER_FEATURES, (uint32_t)(d->features >> 32));
  add_status(d, VIRTIO_STATUS_FEATURES_OK);
  if (!(rd32(d, MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK))
    fail("virtio-%s: device did not accept features %#lx", name, d->features);
}

// Ring memory of one queue: descriptors at 0, avail ring at 1 KiB, used
// ring at 2 KiB of one page (VIRTQ_MAX_SIZE 64 fits each in 1 KiB).
#define RING_PAGE 4096
#define AVAIL_OFF 1024
#define USED_OFF 2048
_Static_assert(16 * VIRTQ_MAX_SIZE <= AVAIL_OFF, "desc table too big");
_Static_assert(AVAIL_OFF + 6 + 2 * VIRTQ_MAX_SIZE <= USED_OFF, "avail too big");
_Static_assert(USED_OFF + 6 + 8 * VIRTQ_MAX_SIZE <= RING_PAGE, "used too big");

static void vq_reset_state(struct virtq* q, uint16_t size) {
  memset((void*)q->desc, 0, RING_PAGE);
  q->size = size;
  q->used_event = &q->avail->ring[size];
  q->avail_event = (volatile uint16_t*)&q->used->ring[size];
  for (uint16_t i = 0; i < size; i++) q->free_next[i] = (uint16_t)(i + 1);
  q->free_head = 0;
  q->num_free = size;
  q->avail_idx = q->last_used = q->kicked_idx = 0;
  memset(q->inflight, 0, sizeof(q->inflight));
  memset(q->done, 0, sizeof(q->done));
  q->no_interrupt = 0;
}

static void write_addr(struct virtio_dev* d, uint32_t lo_reg, uint64_t a) {
  wr32(d, lo_reg, (uint32_t)a);
  wr32(d, lo_reg + 4, (uint32_t)(a >> 32));
}

void virtio_setup_queue(struct virtio_dev* d, int index) {
  const char* name = virtio_id_name(d->device_id);
  if (index < 0 || index >= VIRTIO_MAX_QUEUES)
    fail("virtio-%s: queue %d out of range", name, index);
  wr32(d, MMIO_QUEUE_SEL, (uint32_t)index);
  if (rd32(d, MMIO_QUEUE_READY))
    fail("virtio-%s: queue %d is ready before setup", name, index);
  uint32_t max = rd32(d, MMIO_QUEUE_NUM_MAX);
  if (max == 0) fail("virtio-%s: queue %d not available", name, index);
  uint32_t size = VIRTQ_MAX_SIZE;  // split rings: a power of 2
  while (size > max) size >>= 1;
  struct virtq* q = &d->vq[index];
  if (!q->desc) {  // first time: memory stays with the queue across resets
    char* ring = dma_alloc(RING_PAGE, RING_PAGE);
    q->desc = (volatile struct virtq_desc*)ring;
    q->avail = (volatile struct virtq_avail*)(ring + AVAIL_OFF);
    q->used = (volatile struct virtq_used*)(ring + USED_OFF);
    q->indirect = dma_alloc(sizeof(*q->indirect) * VIRTQ_MAX_SIZE, 16);
  }
  q->dev = d;
  q->index = (uint16_t)index;
  vq_reset_state(q, (uint16_t)size);
  wr32(d, MMIO_QUEUE_NUM, size);
  write_addr(d, MMIO_QUEUE_DESC_LOW, (uint64_t)q->desc);
  write_addr(d, MMIO_QUEUE_DRIVER_LOW, (uint64_t)q->avail);
  write_addr(d, MMIO_QUEUE_DEVICE_LOW, (uint64_t)q->used);
  wr32(d, MMIO_QUEUE_READY, 1);
  if (index >= d->nvq) d->nvq = index + 1;
}

void virtio_driver_ok(struct virtio_dev* d) {
  add_status(d, VIRTIO_STATUS_DRIVER_OK);
  uint32_t s = rd32(d, MMIO_STATUS);
  if (s & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED))
    fail("virtio-%s: status %#x after DRIVER_OK", virtio_id_name(d->device_id), s);
}

void virtio_init(struct virtio_dev* d, uint64_t wanted, int nqueues) {
  virtio_begin(d, wanted);
  for (int i = 0; i < nqueues; i++) virtio_setup_queue(d, i);
  virtio_driver_ok(d);
}

// ---- configuration space ----

static uint64_t cfg_addr(struct virtio_dev* d, uint32_t off, uint32_t width) {
  if (off > d->size - MMIO_CONFIG || width > d->size - MMIO_CONFIG - off)
    fail("virtio-%s: config offset %u beyond the window",
         virtio_id_name(d->device_id), off);
  return d->base + MMIO_CONFIG + off;
}

uint8_t virtio_cfg8(struct virtio_dev* d, uint32_t off) {
  return *(volatile uint8_t*)cfg_addr(d, off, 1);
}
uint16_t virtio_cfg16(struct virtio_dev* d, uint32_t off) {
  return *(volatile uint16_t*)cfg_addr(d, off, 2);
}
uint32_t virtio_cfg32(struct virtio_dev* d, uint32_t off) {
  return *(volatile uint32_t*)cfg_addr(d, off, 4);
}
void virtio_cfg_write8(struct virtio_dev* d, uint32_t off, uint8_t v) {
  *(volatile uint8_t*)cfg_addr(d, off, 1) = v;
}

// Two 32-bit halves: a change of ConfigGeneration in between means the
// device updated the field while we read it (spec 2.5.1), so read again.
uint64_t virtio_cfg64(struct virtio_dev* d, uint32_t off) {
  volatile uint32_t* p = (volatile uint32_t*)cfg_addr(d, off, 8);
  for (int tries = 0; tries < 100; tries++) {
    uint32_t gen = rd32(d, MMIO_CONFIG_GENERATION);
    uint64_t lo = p[0], hi = p[1];
    if (rd32(d, MMIO_CONFIG_GENERATION) == gen) return hi << 32 | lo;
  }
  fail("virtio-%s: config generation keeps changing", virtio_id_name(d->device_id));
}

// ---- virtqueues ----

static const char* qname(struct virtq* q) { return virtio_id_name(q->dev->device_id); }

int vq_submit(struct virtq* q, const struct vbuf* b, int n, int indirect) {
  if (!q->size) fail("virtio-%s: queue %u not set up", qname(q), q->index);
  if (n < 1 || n > VIRTQ_MAX_CHAIN)
    fail("virtio-%s: chain of %d buffers", qname(q), n);
  if (indirect && !virtio_has(q->dev, VIRTIO_F_INDIRECT_DESC))
    fail("virtio-%s: indirect descriptors not negotiated", qname(q));
  int need = indirect ? 1 : n;
  if (q->num_free < need) return -1;
  uint16_t head = q->free_head, i = head;
  uint32_t wlen = 0;
  for (int k = 0; k < n; k++) wlen += b[k].writable ? b[k].len : 0;
  if (indirect) {
    struct virtq_desc* t = q->indirect[head];
    for (int k = 0; k < n; k++) {
      t[k].addr = b[k].addr;
      t[k].len = b[k].len;
      t[k].flags = (uint16_t)((b[k].writable ? VIRTQ_DESC_F_WRITE : 0) |
                              (k + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
      t[k].next = (uint16_t)(k + 1 < n ? k + 1 : 0);
    }
    q->desc[head].addr = (uint64_t)t;
    q->desc[head].len = (uint32_t)(n * sizeof(struct virtq_desc));
    q->desc[head].flags = VIRTQ_DESC_F_INDIRECT;
    q->desc[head].next = 0;
    q->free_head = q->free_next[head];
  } else {
    for (int k = 0; k < n; k++) {
      q->desc[i].addr = b[k].addr;
      q->desc[i].len = b[k].len;
      q->desc[i].flags = (uint16_t)((b[k].writable ? VIRTQ_DESC_F_WRITE : 0) |
                                    (k + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
      q->desc[i].next = k + 1 < n ? q->free_next[i] : 0;
      if (k + 1 < n) i = q->free_next[i];
    }
    q->free_head = q->free_next[i];
  }
  q->num_free = (uint16_t)(q->num_free - need);
  q->inflight[head] = (uint8_t)need;
  q->wlen[head] = wlen;
  q->done[head] = 0;
  compiler_barrier();  // descriptors (and the caller's data) before the ring
  q->avail->ring[q->avail_idx % q->size] = head;
  compiler_barrier();
  q->avail->idx = ++q->avail_idx;
  q->submitted++;
  return head;
}

void virtio_notify(struct virtio_dev* d, uint16_t queue) {
  wr32(d, MMIO_QUEUE_NOTIFY, queue);
}

void vq_kick(struct virtq* q) {
  full_barrier();
  uint16_t now = q->avail_idx, old = q->kicked_idx;
  q->kicked_idx = now;
  int notify;
  if (virtio_has(q->dev, VIRTIO_F_EVENT_IDX)) {
    // Notify when avail_event lies in [old, now): the device asked to be
    // told once it sees entry avail_event (spec 2.7.10).
    uint16_t ev = *q->avail_event;
    notify = (uint16_t)(now - ev - 1) < (uint16_t)(now - old);
  } else {
    notify = !(q->used->flags & VIRTQ_USED_F_NO_NOTIFY);
  }
  if (notify) {
    virtio_notify(q->dev, q->index);
    q->notifies++;
  } else {
    q->notifies_skipped++;
  }
}

static void free_chain(struct virtq* q, uint16_t head) {
  uint16_t last = head;
  for (int k = 1; k < q->inflight[head]; k++) last = q->free_next[last];
  q->free_next[last] = q->free_head;
  q->free_head = head;
  q->num_free = (uint16_t)(q->num_free + q->inflight[head]);
  q->inflight[head] = 0;
}

int vq_collect(struct virtq* q) {
  uint16_t idx = q->used->idx;
  compiler_barrier();  // the index before the entries it covers
  uint16_t n = (uint16_t)(idx - q->last_used);
  if (n > q->size)
    fail("virtio-%s: used idx moved from %u to %u on a %u-entry queue %u",
         qname(q), q->last_used, idx, q->size, q->index);
  for (uint16_t k = 0; k < n; k++) {
    volatile struct virtq_used_elem* e = &q->used->ring[q->last_used % q->size];
    uint32_t id = e->id, len = e->len;
    if (id >= q->size || !q->inflight[id])
      fail("virtio-%s: queue %u used id %u is not in flight", qname(q),
           q->index, id);
    if (len > q->wlen[id])
      fail("virtio-%s: queue %u used len %u exceeds the %u writable bytes of "
           "chain %u", qname(q), q->index, len, q->wlen[id], id);
    free_chain(q, (uint16_t)id);
    q->done[id] = 1;
    q->used_len[id] = len;
    q->last_used++;
    q->completed++;
    q->dev->completions++;
  }
  // With EVENT_IDX: interrupt again on the next entry (unless asked not to).
  if (virtio_has(q->dev, VIRTIO_F_EVENT_IDX) && !q->no_interrupt)
    *q->used_event = q->last_used;
  return n;
}

int vq_wait(struct virtq* q, int head, uint32_t* len, uint32_t timeout_ms) {
  if (head < 0 || head >= q->size || (!q->inflight[head] && !q->done[head]))
    fail("virtio-%s: waiting for chain %d, which was not submitted", qname(q), head);
  if (current_ring() == 0) irq_enable();
  uint64_t deadline = deadline_after(timeout_ms);
  for (;;) {
    vq_collect(q);
    if (q->done[head]) {
      q->done[head] = 0;
      if (len) *len = q->used_len[head];
      return 0;
    }
    if (rdtsc() > deadline) return -1;
    cpu_relax();
  }
}

void vq_set_interrupts(struct virtq* q, int on) {
  q->no_interrupt = !on;
  if (virtio_has(q->dev, VIRTIO_F_EVENT_IDX))
    *q->used_event = on ? q->last_used : (uint16_t)(q->last_used - 1);
  else
    q->avail->flags = on ? 0 : VIRTQ_AVAIL_F_NO_INTERRUPT;
}

// ---- raw access ----

void vq_raw_desc(struct virtq* q, uint16_t i, uint64_t addr, uint32_t len,
                 uint16_t flags, uint16_t next) {
  if (i >= q->size) fail("raw descriptor %u beyond queue size %u", i, q->size);
  q->desc[i].addr = addr;
  q->desc[i].len = len;
  q->desc[i].flags = flags;
  q->desc[i].next = next;
}

void vq_raw_publish(struct virtq* q, uint16_t head) {
  compiler_barrier();
  q->avail->ring[q->avail_idx % q->size] = head;
  compiler_barrier();
  q->avail->idx = ++q->avail_idx;
}

void vq_raw_set_avail_idx(struct virtq* q, uint16_t idx) {
  compiler_barrier();
  q->avail->idx = q->avail_idx = idx;
}

uint16_t vq_raw_used_idx(struct virtq* q) { return q->used->idx; }

// ---- interrupts ----

void virtio_report_irqs(struct virtio_dev* d, const char* name) {
  // The interrupt may trail the used-ring update it announces.
  if (current_ring() == 0) irq_enable();
  uint64_t deadline = deadline_after(1000);
  while (d->completions && !d->irqs && !d->quiet_ok && rdtsc() < deadline)
    cpu_relax();
  printf("%s: %u interrupts (%u config)\n", name, d->irqs, d->config_irqs);
  if (d->completions && !d->irqs && !d->quiet_ok)
    fail("%s: the device completed %u requests but never interrupted", name,
         d->completions);
}

// ---- guest memory for the device ----

static uint64_t dma_next, dma_end;

static int overlaps(uint64_t a, uint64_t n, uint64_t b, uint64_t m) {
  return a < b + m && b < a + n;
}

// Moves *p past any boot structure in [*p, *p+size); 1 if it moved.
static int skip_boot_data(uint64_t* p, uint64_t size) {
  struct { uint64_t addr, len; } r[3] = {
      {(uint64_t)boot_info, sizeof(*boot_info)},
      {boot_info->cmdline_paddr, strlen(boot_cmdline()) + 1},
      {boot_info->memmap_paddr,
       boot_memmap_count() * sizeof(struct hvm_memmap_entry)}};
  for (int i = 0; i < 3; i++)
    if (r[i].addr && overlaps(*p, size, r[i].addr, r[i].len)) {
      *p = r[i].addr + r[i].len;
      return 1;
    }
  return 0;
}

// The RAM entry holding the image end: DMA memory comes from its rest
// (below 4 GiB, where the identity map always reaches).
static void dma_setup(void) {
  uint64_t start = (uint64_t)__image_end;
  const struct hvm_memmap_entry* m = boot_memmap();
  for (uint32_t i = 0; i < boot_memmap_count(); i++) {
    if (m[i].type != HVM_MEMMAP_TYPE_RAM) continue;
    if (start < m[i].addr || start - m[i].addr >= m[i].size) continue;
    uint64_t end = m[i].addr + m[i].size;
    dma_next = start;
    dma_end = end > GIB4 || end < m[i].addr ? GIB4 : end;
    return;
  }
  fail("virtio: no memmap RAM entry after the image at %#lx", start);
}

void* dma_alloc(uint64_t size, uint64_t align) {
  if (!dma_end) dma_setup();
  if (align < 16) align = 16;
  uint64_t p = dma_next;
  for (;;) {
    p = (p + align - 1) & ~(align - 1);
    if (p < dma_next || p > dma_end || size > dma_end - p)
      fail("virtio: out of DMA memory (%#lx bytes wanted)", size);
    if (!skip_boot_data(&p, size)) break;  // else p moved past it: realign
  }
  dma_next = p + size;
  memset((void*)p, 0, size);
  return (void*)p;
}

// ---- virtio-blk ----

// Header and status byte of the one request in flight (blk_request waits).
static struct virtio_blk_req_hdr blk_hdr __attribute__((aligned(16)));
static volatile uint8_t blk_status __attribute__((aligned(16)));

static int blk_data_writable(uint32_t type) {
  return type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
}

int blk_request(struct virtq* q, uint32_t type, uint64_t sector, void* data,
                uint32_t len, int nseg, int indirect) {
  struct vbuf b[VIRTQ_MAX_CHAIN];
  if (len == 0) nseg = 0;
  if (nseg < 0 || nseg > VIRTQ_MAX_CHAIN - 2 || (len && nseg == 0))
    fail("virtio-blk: %d data segments", nseg);
  blk_hdr.type = type;
  blk_hdr.reserved = 0;
  blk_hdr.sector = sector;
  blk_status = 0xff;
  b[0] = (struct vbuf){(uint64_t)&blk_hdr, sizeof(blk_hdr), 0};
  uint32_t seg = nseg ? len / nseg : 0;
  for (int k = 0; k < nseg; k++)
    b[1 + k] = (struct vbuf){(uint64_t)data + (uint64_t)k * seg,
                             k + 1 < nseg ? seg : len - seg * (nseg - 1),
                             blk_data_writable(type)};
  b[1 + nseg] = (struct vbuf){(uint64_t)&blk_status, 1, 1};
  int head = vq_submit(q, b, nseg + 2, indirect);
  if (head < 0) return -2;
  vq_kick(q);
  uint32_t used;
  if (vq_wait(q, head, &used, 5000)) return -1;
  compiler_barrier();
  return blk_status;
}
