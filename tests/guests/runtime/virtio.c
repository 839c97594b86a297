// virtio driver library for the test guests; see virtio.h. Written from
// the virtio 1.2 specification (4.2.2 MMIO registers, 4.1.4 PCI common
// configuration, 2.7 split queues, 3.1.1 initialisation). PCI discovery is
// in virtio_pci.c; the transport differences are in the helpers below.
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

// ---- virtio-pci common configuration structure (spec 4.1.4.3) ----
#define PCI_DEVICE_FEATURE_SELECT 0x00
#define PCI_DEVICE_FEATURE 0x04
#define PCI_DRIVER_FEATURE_SELECT 0x08
#define PCI_DRIVER_FEATURE 0x0c
#define PCI_CONFIG_MSIX_VECTOR 0x10
#define PCI_NUM_QUEUES 0x12
#define PCI_DEVICE_STATUS 0x14
#define PCI_CONFIG_GENERATION 0x15
#define PCI_QUEUE_SELECT 0x16
#define PCI_QUEUE_SIZE 0x18
#define PCI_QUEUE_MSIX_VECTOR 0x1a
#define PCI_QUEUE_ENABLE 0x1c
#define PCI_QUEUE_NOTIFY_OFF 0x1e
#define PCI_QUEUE_DESC 0x20
#define PCI_QUEUE_DRIVER 0x28
#define PCI_QUEUE_DEVICE 0x30
#define PCI_NO_VECTOR 0xffff
#define MSIX_CONFIG_ENTRY 0
#define MSIX_QUEUE_ENTRY 1

#define GIB4 (4ull << 30)

// Allocated by virtio_discover, so that guests without virtio (which link
// this file too) keep their image small.
static struct virtio_dev* devices;
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

static inline uint8_t c8(struct virtio_dev* d, uint32_t off) {
  return d->common[off];
}
static inline uint16_t c16(struct virtio_dev* d, uint32_t off) {
  return *(volatile uint16_t*)(d->common + off);
}
static inline uint32_t c32(struct virtio_dev* d, uint32_t off) {
  return *(volatile uint32_t*)(d->common + off);
}
static inline void c8w(struct virtio_dev* d, uint32_t off, uint8_t v) {
  d->common[off] = v;
}
static inline void c16w(struct virtio_dev* d, uint32_t off, uint16_t v) {
  *(volatile uint16_t*)(d->common + off) = v;
}
static inline void c32w(struct virtio_dev* d, uint32_t off, uint32_t v) {
  *(volatile uint32_t*)(d->common + off) = v;
}
// 64-bit fields as two 32-bit writes, low half first (spec 4.1.3.1).
static inline void c64w(struct virtio_dev* d, uint32_t off, uint64_t v) {
  c32w(d, off, (uint32_t)v);
  c32w(d, off + 4, (uint32_t)(v >> 32));
}

// ---- the transport differences ----

static uint32_t get_status(struct virtio_dev* d) {
  return d->pci ? c8(d, PCI_DEVICE_STATUS) : rd32(d, MMIO_STATUS);
}
static void set_status(struct virtio_dev* d, uint32_t v) {
  if (d->pci)
    c8w(d, PCI_DEVICE_STATUS, (uint8_t)v);
  else
    wr32(d, MMIO_STATUS, v);
}
static uint32_t device_features(struct virtio_dev* d, uint32_t sel) {
  if (d->pci) {
    c32w(d, PCI_DEVICE_FEATURE_SELECT, sel);
    return c32(d, PCI_DEVICE_FEATURE);
  }
  wr32(d, MMIO_DEVICE_FEATURES_SEL, sel);
  return rd32(d, MMIO_DEVICE_FEATURES);
}
static void driver_features(struct virtio_dev* d, uint32_t sel, uint32_t v) {
  if (d->pci) {
    c32w(d, PCI_DRIVER_FEATURE_SELECT, sel);
    c32w(d, PCI_DRIVER_FEATURE, v);
    return;
  }
  wr32(d, MMIO_DRIVER_FEATURES_SEL, sel);
  wr32(d, MMIO_DRIVER_FEATURES, v);
}
static uint32_t config_generation(struct virtio_dev* d) {
  return d->pci ? c8(d, PCI_CONFIG_GENERATION) : rd32(d, MMIO_CONFIG_GENERATION);
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
    case VIRTIO_ID_BALLOON: return "balloon";
    case VIRTIO_ID_VSOCK: return "vsock";
    default: return "other";
  }
}

static void virtio_irq(struct irq_frame* f) {
  int irq = (int)f->vector - VIRTIO_VECTOR_BASE, any = 0;
  struct virtio_dev* empty = NULL;
  for (int i = 0; i < ndevices; i++) {
    struct virtio_dev* d = &devices[i];
    if (d->pci || d->irq != irq) continue;
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
  if (irq >= 24)  // vectors 0x40..0x57
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

// The transport in use: virtio.transport=, else mmio when the command
// line names virtio-mmio devices.
static int want_pci(void) {
  char t[8];
  if (cmdline_str("virtio.transport", t, sizeof(t))) {
    if (!memcmp(t, "pci", 4)) return 1;
    if (!memcmp(t, "mmio", 5)) return 0;
    fail("virtio: virtio.transport=%s, want mmio or pci", t);
  }
  return cmdline_find("virtio_mmio.device") == NULL;
}

static void discover_mmio(void) {
  static const char key[] = "virtio_mmio.device=";
  const char* s = boot_cmdline();
  while (*s) {
    while (*s == ' ') s++;
    if (memcmp(s, key, sizeof(key) - 1) == 0) parse_mmio_entry(s + sizeof(key) - 1);
    while (*s && *s != ' ') s++;
  }
  for (int i = 0; i < ndevices; i++) {
    set_irq_handler(VIRTIO_VECTOR_BASE + devices[i].irq, virtio_irq);
    ioapic_route(devices[i].irq, VIRTIO_VECTOR_BASE + devices[i].irq);
  }
}

// MSI-X: each vector belongs to one device; nothing to read or ACK.
static void virtio_msix_irq(struct irq_frame* f) {
  for (int i = 0; i < ndevices; i++) {
    struct virtio_dev* d = &devices[i];
    if (!d->pci) continue;
    if (f->vector == d->vec_queues) d->irqs++;
    else if (f->vector == d->vec_config) d->config_irqs++;
  }
  lapic_eoi();
}

int virtio_discover(void) {
  if (ndevices >= 0) return ndevices;
  ndevices = 0;
  devices = dma_alloc(sizeof(*devices) * VIRTIO_MAX_DEVICES, 64);
  // Firmware (SeaBIOS on pc/q35) leaves the 8259 PIC on with the timer at
  // vector 8, which would look like a double fault once we sti: mask it.
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
  lapic_enable();
  if (!want_pci()) {
    discover_mmio();
    return ndevices;
  }
  virtio_pci_scan(devices, &ndevices, VIRTIO_MAX_DEVICES);
  for (int i = 0; i < ndevices; i++) {
    set_irq_handler(devices[i].vec_config, virtio_msix_irq);
    set_irq_handler(devices[i].vec_queues, virtio_msix_irq);
  }
  return ndevices;
}

void virtio_where(const struct virtio_dev* d, char* buf, size_t size) {
  if (d->pci)
    snprintf(buf, size, "pci %02x:%02x.%x %s", d->bdf >> 8,
             (d->bdf >> 3) & 0x1f, d->bdf & 7, d->msix_entries ? "msi-x" : "polled");
  else
    snprintf(buf, size, "mmio %#lx irq %d", d->base, d->irq);
}

struct virtio_dev* virtio_find(uint32_t device_id, int nth) {
  for (int i = 0; i < ndevices; i++)
    if (devices[i].device_id == device_id && nth-- == 0) return &devices[i];
  return NULL;
}

// ---- initialisation ----

uint32_t virtio_status(struct virtio_dev* d) { return get_status(d); }

int virtio_reset(struct virtio_dev* d) {
  set_status(d, 0);
  uint64_t deadline = deadline_after(1000);
  while (get_status(d) != 0)
    if (rdtsc() > deadline) return -1;
  for (int i = 0; i < VIRTIO_MAX_QUEUES; i++) d->vq[i].size = 0;
  d->nvq = 0;
  return 0;
}

static void add_status(struct virtio_dev* d, uint32_t bits) {
  set_status(d, get_status(d) | bits);
}

void virtio_begin(struct virtio_dev* d, uint64_t wanted) {
  const char* name = virtio_id_name(d->device_id);
  if (virtio_reset(d)) fail("virtio-%s: status did not read 0 after reset", name);
  add_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
  add_status(d, VIRTIO_STATUS_DRIVER);
  uint64_t lo = device_features(d, 0), hi = device_features(d, 1);
  d->offered = hi << 32 | lo;
  if (!(d->offered & VF(VIRTIO_F_VERSION_1)))
    fail("virtio-%s: VIRTIO_F_VERSION_1 not offered (features %#lx)", name,
         d->offered);
  d->features = (d->offered & wanted) | VF(VIRTIO_F_VERSION_1);
  driver_features(d, 0, (uint32_t)d->features);
  driver_features(d, 1, (uint32_t)(d->features >> 32));
  add_status(d, VIRTIO_STATUS_FEATURES_OK);
  if (!(get_status(d) & VIRTIO_STATUS_FEATURES_OK))
    fail("virtio-%s: device did not accept features %#lx", name, d->features);
  // A reset forgets the MSI-X vectors: set the config vector again.
  if (d->pci && d->msix_entries) {
    c16w(d, PCI_CONFIG_MSIX_VECTOR, MSIX_CONFIG_ENTRY);
    if (c16(d, PCI_CONFIG_MSIX_VECTOR) != MSIX_CONFIG_ENTRY)
      fail("virtio-%s: config_msix_vector not accepted", name);
  }
}

// Ring memory of one queue laid out for `limit` entries: descriptors at 0,
// avail ring at 16·limit, used ring at 32·limit (the default limit 64 puts
// them at 0, 1 KiB and 2 KiB of one page).
#define RING_PAGE 4096
static uint16_t queue_limit = VIRTQ_DEFAULT_LIMIT;

static uint64_t ring_avail_off(uint16_t limit) { return 16u * limit; }
static uint64_t ring_used_off(uint16_t limit) { return 32u * limit; }
static uint64_t ring_bytes(uint16_t limit) {
  uint64_t end = ring_used_off(limit) + 6 + 8u * limit;
  return (end + RING_PAGE - 1) & ~(uint64_t)(RING_PAGE - 1);
}

void virtio_set_queue_limit(uint16_t limit) {
  if (limit == 0 || limit > VIRTQ_MAX_SIZE || (limit & (limit - 1)))
    fail("virtio: queue limit %u is not a power of 2 up to %u", limit,
         VIRTQ_MAX_SIZE);
  queue_limit = limit;
}

static void vq_reset_state(struct virtq* q, uint16_t size) {
  memset((void*)q->desc, 0, ring_bytes(q->ring_limit));
  q->size = size;
  q->used_event = &q->avail->ring[size];
  q->avail_event = (volatile uint16_t*)&q->used->ring[size];
  for (uint16_t i = 0; i < size; i++) q->free_next[i] = (uint16_t)(i + 1);
  q->free_head = 0;
  q->num_free = size;
  q->avail_idx = q->last_used = q->kicked_idx = 0;
  memset(q->inflight, 0, q->ring_limit);
  memset(q->done, 0, q->ring_limit);
  q->no_interrupt = 0;
}

static void write_addr(struct virtio_dev* d, uint32_t lo_reg, uint64_t a) {
  wr32(d, lo_reg, (uint32_t)a);
  wr32(d, lo_reg + 4, (uint32_t)(a >> 32));
}

// Selects queue `index` and returns its maximum size (0: no such queue).
static uint32_t queue_max(struct virtio_dev* d, int index, const char* name) {
  if (d->pci) {
    if (index >= c16(d, PCI_NUM_QUEUES)) return 0;
    c16w(d, PCI_QUEUE_SELECT, (uint16_t)index);
    if (c16(d, PCI_QUEUE_ENABLE))
      fail("virtio-%s: queue %d is enabled before setup", name, index);
    return c16(d, PCI_QUEUE_SIZE);
  }
  wr32(d, MMIO_QUEUE_SEL, (uint32_t)index);
  if (rd32(d, MMIO_QUEUE_READY))
    fail("virtio-%s: queue %d is ready before setup", name, index);
  return rd32(d, MMIO_QUEUE_NUM_MAX);
}

// Hands the (selected) queue's size, rings and vector to the device.
static void queue_activate(struct virtio_dev* d, struct virtq* q, const char* name) {
  if (d->pci) {
    c16w(d, PCI_QUEUE_SIZE, q->size);
    if (d->msix_entries) {
      c16w(d, PCI_QUEUE_MSIX_VECTOR, MSIX_QUEUE_ENTRY);
      if (c16(d, PCI_QUEUE_MSIX_VECTOR) != MSIX_QUEUE_ENTRY)
        fail("virtio-%s: queue_msix_vector not accepted", name);
    }
    c64w(d, PCI_QUEUE_DESC, (uint64_t)q->desc);
    c64w(d, PCI_QUEUE_DRIVER, (uint64_t)q->avail);
    c64w(d, PCI_QUEUE_DEVICE, (uint64_t)q->used);
    q->notify_off = c16(d, PCI_QUEUE_NOTIFY_OFF);
    uint64_t at = (uint64_t)q->notify_off * d->notify_mult;
    if (at > d->notify_len || d->notify_len - at < 2)
      fail("virtio-%s: queue notify offset %#lx beyond the %u-byte notify "
           "structure", name, at, d->notify_len);
    c16w(d, PCI_QUEUE_ENABLE, 1);
    return;
  }
  wr32(d, MMIO_QUEUE_NUM, q->size);
  write_addr(d, MMIO_QUEUE_DESC_LOW, (uint64_t)q->desc);
  write_addr(d, MMIO_QUEUE_DRIVER_LOW, (uint64_t)q->avail);
  write_addr(d, MMIO_QUEUE_DEVICE_LOW, (uint64_t)q->used);
  wr32(d, MMIO_QUEUE_READY, 1);
}

void virtio_setup_queue(struct virtio_dev* d, int index) {
  const char* name = virtio_id_name(d->device_id);
  if (index < 0 || index >= VIRTIO_MAX_QUEUES)
    fail("virtio-%s: queue %d out of range", name, index);
  uint32_t max = queue_max(d, index, name);
  if (max == 0) fail("virtio-%s: queue %d not available", name, index);
  struct virtq* q = &d->vq[index];
  if (!q->desc) {  // first time: memory stays with the queue across resets
    uint16_t limit = queue_limit;
    char* ring = dma_alloc(ring_bytes(limit), RING_PAGE);
    q->ring_limit = limit;
    q->desc = (volatile struct virtq_desc*)ring;
    q->avail = (volatile struct virtq_avail*)(ring + ring_avail_off(limit));
    q->used = (volatile struct virtq_used*)(ring + ring_used_off(limit));
    q->indirect = dma_alloc(sizeof(*q->indirect) * limit, 16);
    q->wlen = dma_alloc(4u * limit, 16);
    q->used_len = dma_alloc(4u * limit, 16);
    q->free_next = dma_alloc(2u * limit, 16);
    q->inflight = dma_alloc(limit, 16);
    q->done = dma_alloc(limit, 16);
  }
  uint32_t size = q->ring_limit;  // split rings: a power of 2
  while (size > max) size >>= 1;
  q->dev = d;
  q->index = (uint16_t)index;
  vq_reset_state(q, (uint16_t)size);
  queue_activate(d, q, name);
  if (index >= d->nvq) d->nvq = index + 1;
}

void virtio_driver_ok(struct virtio_dev* d) {
  add_status(d, VIRTIO_STATUS_DRIVER_OK);
  uint32_t s = get_status(d);
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
  uint64_t base = d->pci ? (uint64_t)d->devcfg : d->base + MMIO_CONFIG;
  uint32_t len = d->pci ? d->devcfg_len : d->size - MMIO_CONFIG;
  if (!base || off > len || width > len - off)
    fail("virtio-%s: config offset %u beyond the %u-byte config",
         virtio_id_name(d->device_id), off, len);
  return base + off;
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
void virtio_cfg_write32(struct virtio_dev* d, uint32_t off, uint32_t v) {
  *(volatile uint32_t*)cfg_addr(d, off, 4) = v;
}

// Two 32-bit halves: a change of ConfigGeneration in between means the
// device updated the field while we read it (spec 2.5.1), so read again.
uint64_t virtio_cfg64(struct virtio_dev* d, uint32_t off) {
  volatile uint32_t* p = (volatile uint32_t*)cfg_addr(d, off, 8);
  for (int tries = 0; tries < 100; tries++) {
    uint32_t gen = config_generation(d);
    uint64_t lo = p[0], hi = p[1];
    if (config_generation(d) == gen) return hi << 32 | lo;
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
  if (!d->pci) {
    wr32(d, MMIO_QUEUE_NOTIFY, queue);
    return;
  }
  // The queue's own notify address (checked at setup); unknown queues go
  // to queue 0's, which is what a hostile caller may want anyway.
  uint16_t off = queue < VIRTIO_MAX_QUEUES ? d->vq[queue].notify_off : 0;
  *(volatile uint16_t*)(d->notify + (uint64_t)off * d->notify_mult) = queue;
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

// Used entries published and not yet consumed (checked against the size).
static uint16_t used_pending(struct virtq* q) {
  uint16_t idx = q->used->idx;
  compiler_barrier();  // the index before the entries it covers
  uint16_t n = (uint16_t)(idx - q->last_used);
  if (n > q->size)
    fail("virtio-%s: used idx moved from %u to %u on a %u-entry queue %u",
         qname(q), q->last_used, idx, q->size, q->index);
  return n;
}

// Consumes the used entry at last_used (which must be published): checks
// it, frees its chain. Returns the head.
static uint16_t consume_one(struct virtq* q, uint32_t* len_out) {
  volatile struct virtq_used_elem* e = &q->used->ring[q->last_used % q->size];
  uint32_t id = e->id, len = e->len;
  if (id >= q->size || !q->inflight[id])
    fail("virtio-%s: queue %u used id %u is not in flight", qname(q),
         q->index, id);
  if (len > q->wlen[id])
    fail("virtio-%s: queue %u used len %u exceeds the %u writable bytes of "
         "chain %u", qname(q), q->index, len, q->wlen[id], id);
  free_chain(q, (uint16_t)id);
  q->last_used++;
  q->completed++;
  q->dev->completions++;
  *len_out = len;
  return (uint16_t)id;
}

// With EVENT_IDX: interrupt again on the next entry (unless asked not to).
static void rearm(struct virtq* q) {
  if (virtio_has(q->dev, VIRTIO_F_EVENT_IDX) && !q->no_interrupt)
    *q->used_event = q->last_used;
}

int vq_collect(struct virtq* q) {
  uint16_t n = used_pending(q);
  for (uint16_t k = 0; k < n; k++) {
    uint32_t len;
    uint16_t id = consume_one(q, &len);
    q->done[id] = 1;
    q->used_len[id] = len;
  }
  rearm(q);
  return n;
}

int vq_next_used(struct virtq* q, uint32_t* len) {
  if (!used_pending(q)) {
    rearm(q);
    return -1;
  }
  uint32_t l;
  int id = consume_one(q, &l);
  if (len) *len = l;
  rearm(q);
  return id;
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

void* dma_reserve(uint64_t size, uint64_t align) {
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
  return (void*)p;
}

void* dma_alloc(uint64_t size, uint64_t align) {
  void* p = dma_reserve(size, align);
  memset(p, 0, size);
  return p;
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
