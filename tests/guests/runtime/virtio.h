// A small virtio 1.2 driver library for the test guests: device discovery
// (virtio-mmio from the kernel command line), device initialisation
// (spec 3.1.1), split virtqueues with optional indirect descriptors and
// EVENT_IDX, interrupts through the IOAPIC, and raw helpers for tests that
// feed a device hostile rings.
//
//   struct virtio_dev* d = virtio_find(VIRTIO_ID_RNG, 0);
//   virtio_init(d, 0, 1);                 // no optional features, 1 queue
//   struct vbuf b = {(uint64_t)buf, 64, 1};
//   int head = vq_submit(&d->vq[0], &b, 1, 0);
//   vq_kick(&d->vq[0]);
//   uint32_t len;
//   if (vq_wait(&d->vq[0], head, &len, 5000)) fail("rng timed out");
//
// Everything except virtio_discover() (IOAPIC programming and interrupt
// handler installation happen there, in ring 0) works in ring 0 and ring 3:
// the device is only touched through MMIO and guest memory. Waits spin with
// interrupts enabled (sti in ring 0; run ring 3 with run_user(.., 1)) until
// a TSC deadline, and report a timeout instead of hanging.
//
// Every value read from a device that indexes guest memory (used ring ids
// and indices, used lengths) is bounds-checked; a bad one is a FAIL.
#ifndef KINDLING_GUEST_VIRTIO_H_
#define KINDLING_GUEST_VIRTIO_H_

#include "runtime.h"

// ---- device IDs, status bits, feature bits (spec 5, 2.1, 6) ----
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_BALLOON 5
#define VIRTIO_ID_VSOCK 19

#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VF(bit) (1ull << (bit))
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

// ---- split virtqueue layout (spec 2.7) ----
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
struct virtq_avail {
  uint16_t flags;
  uint16_t idx;
  uint16_t ring[];  // [size], then uint16_t used_event
};
struct virtq_used_elem {
  uint32_t id;
  uint32_t len;
};
struct virtq_used {
  uint16_t flags;
  uint16_t idx;
  struct virtq_used_elem ring[];  // [size], then uint16_t avail_event
};

#define VIRTQ_MAX_SIZE 256     // largest queue the library can drive
#define VIRTQ_DEFAULT_LIMIT 64 // queue size used: min(QueueNumMax, limit)
#define VIRTQ_MAX_CHAIN 40     // descriptors in one request (and indirect table)
#define VIRTIO_MAX_QUEUES 4
#define VIRTIO_MAX_DEVICES 8
#define VIRTIO_VECTOR_BASE 0x40  // IRQ n -> vector 0x40 + n

// One guest buffer of a request; `writable`: the device writes it.
struct vbuf {
  uint64_t addr;
  uint32_t len;
  int writable;
};

struct virtio_dev;

struct virtq {
  struct virtio_dev* dev;
  uint16_t index;  // queue number on the device
  uint16_t size;   // 0: not set up
  uint16_t notify_off;  // virtio-pci: queue_notify_off
  volatile struct virtq_desc* desc;
  volatile struct virtq_avail* avail;
  volatile struct virtq_used* used;
  volatile uint16_t* used_event;   // &avail->ring[size]
  volatile uint16_t* avail_event;  // &used->ring[size]
  uint16_t ring_limit;  // the largest size the ring memory was laid out for
  struct virtq_desc (*indirect)[VIRTQ_MAX_CHAIN];  // one table per head
  uint16_t free_head, num_free;
  uint16_t avail_idx;   // our copy of avail->idx
  uint16_t last_used;   // used->idx up to which we have consumed
  uint16_t kicked_idx;  // avail_idx at the last notify decision
  // Per-descriptor state, ring_limit entries each (allocated with the ring).
  uint8_t* inflight;    // head -> descriptors it holds (0: free)
  uint16_t* free_next;  // free list and chain links (ours)
  uint8_t* done;        // head -> completed, not yet collected
  uint32_t* wlen;       // head -> device-writable bytes
  uint32_t* used_len;
  int no_interrupt;  // VIRTQ_AVAIL_F_NO_INTERRUPT asked for (no EVENT_IDX)
  uint32_t submitted, completed, notifies, notifies_skipped;
};

struct virtio_dev {
  int pci;            // transport: 0 virtio-mmio, 1 virtio-pci (modern)
  uint64_t base;      // virtio-mmio: register window
  uint32_t size;      // ... its size
  int irq;            // ... IOAPIC pin
  // virtio-pci: bus/device/function, the capabilities' structures (in
  // BARs below 4 GiB) and MSI-X (entry 0: config changes, 1: all queues).
  uint16_t bdf;
  volatile uint8_t* common;
  volatile uint8_t* notify;
  uint32_t notify_mult, notify_len;
  volatile uint8_t* devcfg;  // NULL when the device has no config
  uint32_t devcfg_len;
  volatile uint32_t* msix_table;
  uint16_t msix_entries;
  uint8_t vec_config, vec_queues;  // CPU vectors behind entries 0 and 1
  uint32_t device_id;
  uint32_t version;   // MMIO Version register
  uint64_t offered;   // device features
  uint64_t features;  // negotiated
  int nvq;
  struct virtq vq[VIRTIO_MAX_QUEUES];
  volatile uint32_t irqs;         // interrupts with InterruptStatus bit 0
  volatile uint32_t config_irqs;  // ... bit 1 (configuration change)
  volatile uint32_t empty_irqs;   // ... no bit set (shared line, or late)
  uint32_t completions;           // used entries consumed, all queues
  int quiet_ok;  // interrupts were suppressed on purpose: none is fine
};

// ---- discovery and initialisation ----
// Transport: `virtio.transport=mmio|pci` on the command line; by default
// mmio when the command line has a virtio_mmio.device= entry, else pci.
//
// mmio: parses every virtio_mmio.device=<size>[K|M|G]@<addr>:<irq> on the
// command line, keeps those whose MagicValue is "virt" and DeviceID is not
// 0, FAILs on a Version other than 2, routes each IRQ through the IOAPIC and
// installs the interrupt handler.
// pci: scans bus 0 (configuration mechanism 1, ports 0xcf8/0xcfc) for
// vendor 0x1af4, device 0x1040 + ID, maps the common, notify, ISR and
// device configuration structures from the vendor capabilities (BARs as
// firmware assigned them; one that is 0 or above 4 GiB gets an address
// from 0xe0000000 up), enables memory decoding, bus mastering and MSI-X
// (message address 0xfee00000 | BSP APIC ID << 12, data = vector).
// Ring 0 (port I/O); idempotent. Returns the device count.
int virtio_discover(void);
// The nth (0-based) discovered device with this ID, or NULL.
struct virtio_dev* virtio_find(uint32_t device_id, int nth);
// Human-readable name for a device ID ("blk", "rng", ...).
const char* virtio_id_name(uint32_t device_id);
// Where the device is: "mmio 0x<base> irq <n>" or "pci <bb>:<dd>.<f> msi-x"
// ("... polled" for a pci function without MSI-X: no interrupts then).
void virtio_where(const struct virtio_dev* d, char* buf, size_t size);

// virtio_pci.c: appends the virtio-pci devices of bus 0 to devs[*n..max).
// Ring 0. Used by virtio_discover.
void virtio_pci_scan(struct virtio_dev* devs, int* n, int max);
#define VIRTIO_PCI_VECTOR_BASE 0x90  // device i: 0x90 + 2i config, +1 queues

// Reset (Status = 0, then waits until it reads 0), ACKNOWLEDGE, DRIVER,
// features: VERSION_1 | (offered & wanted), FEATURES_OK (checked), then
// queues 0..nqueues-1 and DRIVER_OK. FAILs on any refusal.
void virtio_init(struct virtio_dev* d, uint64_t wanted, int nqueues);
// The same in steps, for drivers that look at the config in between.
void virtio_begin(struct virtio_dev* d, uint64_t wanted);
void virtio_setup_queue(struct virtio_dev* d, int index);
void virtio_driver_ok(struct virtio_dev* d);
// Writes 0 to Status and waits (bounded) until it reads 0; 0 on success.
int virtio_reset(struct virtio_dev* d);
uint32_t virtio_status(struct virtio_dev* d);
static inline int virtio_has(const struct virtio_dev* d, int bit) {
  return (d->features >> bit) & 1;
}

// Device configuration space (MMIO offset 0x100, or the PCI device
// configuration structure); offsets are checked against its size. 64-bit reads retry on a ConfigGeneration change.
uint8_t virtio_cfg8(struct virtio_dev* d, uint32_t off);
uint16_t virtio_cfg16(struct virtio_dev* d, uint32_t off);
uint32_t virtio_cfg32(struct virtio_dev* d, uint32_t off);
uint64_t virtio_cfg64(struct virtio_dev* d, uint32_t off);
void virtio_cfg_write8(struct virtio_dev* d, uint32_t off, uint8_t v);
void virtio_cfg_write32(struct virtio_dev* d, uint32_t off, uint32_t v);

// Queue size limit for queues set up from now on: a power of 2 up to
// VIRTQ_MAX_SIZE (default VIRTQ_DEFAULT_LIMIT, 64). The size used is the
// largest power of 2 <= min(QueueNumMax, limit). A queue keeps the ring
// memory of its first setup, so raise the limit before virtio_init.
void virtio_set_queue_limit(uint16_t limit);

// ---- virtqueue operations ----
// Puts a chain of n buffers on the ring (not yet notified). indirect != 0
// uses an indirect table (needs VIRTIO_F_INDIRECT_DESC). Returns the head
// descriptor index, or -1 when the ring has no room.
int vq_submit(struct virtq* q, const struct vbuf* b, int n, int indirect);
// Notifies the device unless it suppressed notifications (used->flags
// NO_NOTIFY, or avail_event with EVENT_IDX).
void vq_kick(struct virtq* q);
// Waits until the chain `head` is used; *len = the used length. 0 on
// success, -1 on timeout (timeout_ms of TSC time).
int vq_wait(struct virtq* q, int head, uint32_t* len, uint32_t timeout_ms);
// Consumes the used ring (also done by vq_wait). Returns new entries.
int vq_collect(struct virtq* q);
// Consumes the next used entry in ring order (for queues whose order
// matters, e.g. virtio-net receive with MRG_RXBUF): returns its head and
// *len, or -1 when none is pending. Not to be mixed with vq_wait on the
// same queue (vq_wait would not see heads consumed here).
int vq_next_used(struct virtq* q, uint32_t* len);
// Asks the device not to interrupt for this queue (avail flag, or a far
// used_event with EVENT_IDX) or to interrupt again.
void vq_set_interrupts(struct virtq* q, int on);

// ---- raw access, for hostile tests ----
// These bypass the free list and all checks; re-initialise the device
// (virtio_init) afterwards.
void vq_raw_desc(struct virtq* q, uint16_t i, uint64_t addr, uint32_t len,
                 uint16_t flags, uint16_t next);
void vq_raw_publish(struct virtq* q, uint16_t head);  // ring[idx]=head, idx++
void vq_raw_set_avail_idx(struct virtq* q, uint16_t idx);
uint16_t vq_raw_used_idx(struct virtq* q);
void virtio_notify(struct virtio_dev* d, uint16_t queue);

// ---- interrupts ----
// Prints "<name>: <n> interrupts (<c> config)" and FAILs when the device
// completed requests but never interrupted (after a grace period), unless
// d->quiet_ok.
void virtio_report_irqs(struct virtio_dev* d, const char* name);

// ---- guest memory for the device ----
// Page-aligned (or `align`), zeroed memory from RAM above the guest image
// that holds no boot structure; FAILs when RAM runs out. Never freed.
void* dma_alloc(uint64_t size, uint64_t align);
// The same without zeroing (the memory is not touched), for guests that
// must leave pages untouched (virtio_balloon's free page reports).
void* dma_reserve(uint64_t size, uint64_t align);

// ---- virtio-blk requests (spec 5.2.6) ----
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_GEOMETRY 4
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_TOPOLOGY 10
#define VIRTIO_BLK_F_CONFIG_WCE 11
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20

struct virtio_blk_req_hdr {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
// Discard / write-zeroes payload.
struct virtio_blk_seg {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;  // bit 0: unmap
};

// One request on queue q: header, `len` bytes at `data` split into `nseg`
// equal descriptors (len may be 0 for FLUSH), then the status byte. The
// data direction follows the type. Returns the status byte, or -1 on a
// timeout (5 s), -2 when the ring had no room.
int blk_request(struct virtq* q, uint32_t type, uint64_t sector, void* data,
                uint32_t len, int nseg, int indirect);

// ---- command line ----
// Value of `key=` on the command line as an integer (decimal or 0x hex);
// a bare `key` is 1; absent: dflt.
long cmdline_int(const char* key, long dflt);
// Copies the value of `key=` (up to a blank) into buf; 0 if absent.
int cmdline_str(const char* key, char* buf, size_t size);

#endif  // KINDLING_GUEST_VIRTIO_H_
