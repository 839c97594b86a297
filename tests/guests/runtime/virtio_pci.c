// virtio-pci (modern, spec 4.1) discovery for the virtio library: PCI
// configuration mechanism 1, the virtio vendor capabilities, BARs and
// MSI-X. Ring 0 (port I/O). See virtio.h.
#include "virtio.h"

#define PCI_ADDR_PORT 0xcf8
#define PCI_DATA_PORT 0xcfc
#define PCI_VENDOR_VIRTIO 0x1af4
#define PCI_DEVICE_MODERN_BASE 0x1040  // + virtio device ID

#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_CAP_PTR 0x34
#define PCI_CMD_MEMORY 0x0002
#define PCI_CMD_MASTER 0x0004
#define PCI_CMD_INTX_DISABLE 0x0400
#define PCI_STATUS_CAP_LIST 0x0010
#define PCI_CAP_ID_MSIX 0x11
#define PCI_CAP_ID_VENDOR 0x09

// virtio_pci_cap.cfg_type (spec 4.1.4)
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4

#define MSIX_ENABLE 0x8000
#define MSIX_FUNCTION_MASK 0x4000

// BARs without a usable address (0, or not below 4 GiB), and all of them
// with `virtio.pci_assign=1`, get one from here (below the IOAPIC).
#define PCI_ASSIGN_BASE 0xe0000000ull
#define PCI_ASSIGN_END 0xfec00000ull

static inline void outl(uint16_t port, uint32_t v) {
  __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint32_t inl(uint16_t port) {
  uint32_t v;
  __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}

static uint32_t cfg_read32(uint16_t bdf, uint8_t off) {
  outl(PCI_ADDR_PORT, 0x80000000u | (uint32_t)bdf << 8 | (off & 0xfc));
  return inl(PCI_DATA_PORT);
}
static void cfg_write32(uint16_t bdf, uint8_t off, uint32_t v) {
  outl(PCI_ADDR_PORT, 0x80000000u | (uint32_t)bdf << 8 | (off & 0xfc));
  outl(PCI_DATA_PORT, v);
}
static uint16_t cfg_read16(uint16_t bdf, uint8_t off) {
  return (uint16_t)(cfg_read32(bdf, off) >> (8 * (off & 2)));
}
static uint8_t cfg_read8(uint16_t bdf, uint8_t off) {
  return (uint8_t)(cfg_read32(bdf, off) >> (8 * (off & 3)));
}
// 16-bit write as read-modify-write of the dword: mechanism 1 data port
// accesses narrower than 32 bits are fine too, but one path is simpler.
static void cfg_write16(uint16_t bdf, uint8_t off, uint16_t v) {
  uint32_t shift = 8 * (off & 2);
  uint32_t d = cfg_read32(bdf, off) & ~(0xffffu << shift);
  cfg_write32(bdf, off, d | (uint32_t)v << shift);
}

struct bar {
  uint64_t addr, size;  // size 0: not sized yet / absent
};

static uint64_t assign_next = PCI_ASSIGN_BASE;

// Sizes BAR i (memory decoding must be off) and makes sure it has an
// address below 4 GiB, where the identity map reaches.
static void resolve_bar(uint16_t bdf, int i, struct bar* b) {
  uint8_t reg = (uint8_t)(PCI_BAR0 + 4 * i);
  uint32_t lo = cfg_read32(bdf, reg);
  if (lo & 1) fail("virtio-pci %04x: BAR %d is an I/O BAR", bdf, i);
  int is64 = ((lo >> 1) & 3) == 2;
  if (is64 && i == 5) fail("virtio-pci %04x: 64-bit BAR 5", bdf);
  uint32_t hi = is64 ? cfg_read32(bdf, reg + 4) : 0;
  cfg_write32(bdf, reg, 0xffffffffu);
  uint64_t mask = cfg_read32(bdf, reg) & ~0xfu;
  cfg_write32(bdf, reg, lo);
  if (is64) {
    cfg_write32(bdf, reg + 4, 0xffffffffu);
    mask |= (uint64_t)cfg_read32(bdf, reg + 4) << 32;
    cfg_write32(bdf, reg + 4, hi);
  } else {
    mask |= 0xffffffff00000000ull;
  }
  b->size = ~mask + 1;
  b->addr = ((uint64_t)hi << 32) | (lo & ~0xfu);
  if (!mask || b->size > (1ull << 30))
    fail("virtio-pci %04x: BAR %d size %#lx", bdf, i, b->size);
  if (cmdline_int("virtio.debug", 0))
    printf("virtio-pci %04x: BAR %d at %#lx size %#lx%s\n", bdf, i, b->addr,
           b->size, is64 ? " (64-bit)" : "");
  if (b->addr && b->addr < PCI_ASSIGN_END &&
      b->size <= PCI_ASSIGN_END - b->addr && !cmdline_int("virtio.pci_assign", 0))
    return;
  // Unassigned or out of reach: naturally aligned, from PCI_ASSIGN_BASE.
  uint64_t a = (assign_next + b->size - 1) & ~(b->size - 1);
  if (a + b->size > PCI_ASSIGN_END)
    fail("virtio-pci %04x: no room for BAR %d", bdf, i);
  assign_next = a + b->size;
  cfg_write32(bdf, reg, (uint32_t)a | (lo & 0xf));
  if (is64) cfg_write32(bdf, reg + 4, 0);
  b->addr = a;
}

// Address of [off, off+len) in BAR `bar`, checked against the BAR's size.
static volatile uint8_t* bar_region(uint16_t bdf, struct bar* bars, uint8_t bar,
                                    uint32_t off, uint32_t len) {
  if (bar > 5) fail("virtio-pci %04x: capability names BAR %u", bdf, bar);
  struct bar* b = &bars[bar];
  if (!b->size) resolve_bar(bdf, bar, b);
  if (off > b->size || len > b->size - off)
    fail("virtio-pci %04x: region %#x+%#x beyond BAR %u (%#lx bytes)", bdf,
         off, len, bar, b->size);
  return (volatile uint8_t*)(b->addr + off);
}

// Reads the capabilities we use; FAILs without common or notify config.
static void read_caps(struct virtio_dev* d, struct bar* bars, uint8_t* msix_cap) {
  uint16_t bdf = d->bdf;
  if (!(cfg_read16(bdf, PCI_STATUS) & PCI_STATUS_CAP_LIST))
    fail("virtio-pci %04x: no capability list", bdf);
  uint8_t p = cfg_read8(bdf, PCI_CAP_PTR) & 0xfc;
  *msix_cap = 0;
  for (int n = 0; p >= 0x40 && n < 48; n++, p = cfg_read8(bdf, p + 1) & 0xfc) {
    uint8_t id = cfg_read8(bdf, p);
    if (id == PCI_CAP_ID_MSIX && !*msix_cap) *msix_cap = p;
    if (id != PCI_CAP_ID_VENDOR || p > 0xff - 16) continue;
    uint8_t type = cfg_read8(bdf, p + 3), bar = cfg_read8(bdf, p + 4);
    uint32_t off = cfg_read32(bdf, p + 8), len = cfg_read32(bdf, p + 12);
    // The first capability of each type is the preferred one.
    if (type == VIRTIO_PCI_CAP_COMMON_CFG && !d->common) {
      if (len < 0x38) fail("virtio-pci %04x: common config of %u bytes", bdf, len);
      d->common = bar_region(bdf, bars, bar, off, len);
    } else if (type == VIRTIO_PCI_CAP_NOTIFY_CFG && !d->notify && p <= 0xff - 20) {
      d->notify = bar_region(bdf, bars, bar, off, len);
      d->notify_len = len;
      d->notify_mult = cfg_read32(bdf, p + 16);
    } else if (type == VIRTIO_PCI_CAP_DEVICE_CFG && !d->devcfg) {
      d->devcfg = bar_region(bdf, bars, bar, off, len);
      d->devcfg_len = len;
    }
  }
  if (!d->common || !d->notify)
    fail("virtio-pci %04x: common or notify capability missing", bdf);
}

// Finds the MSI-X table (its BAR is sized while decoding is still off).
static void locate_msix(struct virtio_dev* d, struct bar* bars, uint8_t cap) {
  uint16_t bdf = d->bdf;
  if (!cap) {
    // No MSI-X (QEMU's virtio-balloon-pci has none): INTx stays disabled
    // and the device is only polled; no interrupt is expected.
    d->msix_entries = 0;
    d->quiet_ok = 1;
    return;
  }
  uint16_t ctrl = cfg_read16(bdf, cap + 2);
  uint32_t table = cfg_read32(bdf, cap + 4);
  d->msix_entries = (uint16_t)((ctrl & 0x7ff) + 1);
  if (d->msix_entries < 2)
    fail("virtio-pci %04x: %u MSI-X entries, want 2", bdf, d->msix_entries);
  d->msix_table = (volatile uint32_t*)bar_region(
      bdf, bars, table & 7, table & ~7u, d->msix_entries * 16u);
}

// MSI-X entry 0 (config) and 1 (queues) -> this CPU, vectors vec_config and
// vec_queues; then MSI-X on, function mask off.
static void enable_msix(struct virtio_dev* d, uint8_t cap) {
  uint8_t vec[2] = {d->vec_config, d->vec_queues};
  for (int e = 0; e < 2; e++) {
    volatile uint32_t* t = d->msix_table + 4 * e;
    t[0] = 0xfee00000u | lapic_id() << 12;  // address: physical dest
    t[1] = 0;
    t[2] = vec[e];  // data: fixed delivery, edge
    t[3] = 0;       // unmasked
  }
  uint16_t ctrl = cfg_read16(d->bdf, cap + 2);
  cfg_write16(d->bdf, cap + 2,
              (uint16_t)((ctrl | MSIX_ENABLE) & ~MSIX_FUNCTION_MASK));
}

static void probe(uint16_t bdf, struct virtio_dev* d, int index) {
  struct bar bars[6] = {{0, 0}};
  uint16_t cmd = cfg_read16(bdf, PCI_COMMAND);
  cfg_write16(bdf, PCI_COMMAND, cmd & ~PCI_CMD_MEMORY);  // while sizing BARs
  d->pci = 1;
  d->bdf = bdf;
  d->vec_config = (uint8_t)(VIRTIO_PCI_VECTOR_BASE + 2 * index);
  d->vec_queues = (uint8_t)(d->vec_config + 1);
  uint8_t msix_cap;
  read_caps(d, bars, &msix_cap);
  locate_msix(d, bars, msix_cap);
  cfg_write16(bdf, PCI_COMMAND,
              cmd | PCI_CMD_MEMORY | PCI_CMD_MASTER | PCI_CMD_INTX_DISABLE);
  if (d->msix_entries) enable_msix(d, msix_cap);
}

void virtio_pci_scan(struct virtio_dev* devs, int* n, int max) {
  for (int dev = 0; dev < 32; dev++) {
    for (int fn = 0; fn < 8; fn++) {
      uint16_t bdf = (uint16_t)(dev << 3 | fn);
      uint32_t id = cfg_read32(bdf, 0);
      if ((id & 0xffff) == 0xffff) {
        if (fn == 0) break;
        continue;
      }
      uint16_t device = (uint16_t)(id >> 16);
      if ((id & 0xffff) == PCI_VENDOR_VIRTIO && device > PCI_DEVICE_MODERN_BASE &&
          device < PCI_DEVICE_MODERN_BASE + 0x40) {
        if (*n == max) fail("virtio: more than %d devices", max);
        struct virtio_dev* d = &devs[*n];
        memset(d, 0, sizeof(*d));
        d->device_id = device - PCI_DEVICE_MODERN_BASE;
        probe(bdf, d, *n);
        (*n)++;
      }
      if (fn == 0 && !(cfg_read8(bdf, PCI_HEADER_TYPE) & 0x80)) break;
    }
  }
}
