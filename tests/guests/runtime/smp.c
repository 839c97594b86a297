// CPU discovery (ACPI MADT / MP table) and AP startup.
#include "smp.h"

#define AP_STACK_SIZE 4096

extern char ap_trampoline[], ap_trampoline_end[];
extern uint64_t ap_stack_top;
void load_idt(void);

volatile uint8_t ap_online[256];
static char ap_stacks[MAX_CPUS][AP_STACK_SIZE]
    __attribute__((section(".noinit"), aligned(16)));
static uint32_t aps_started;
static uint64_t tramp;

// ---- ACPI ----
static int checksum_ok(const void* p, uint32_t len) {
  const uint8_t* b = p;
  uint8_t sum = 0;
  for (uint32_t i = 0; i < len; i++) sum += b[i];
  return sum == 0;
}

static const uint8_t* find_rsdp(void) {
  if (boot_info->rsdp_paddr && mapped(boot_info->rsdp_paddr, 36)) {
    const uint8_t* p = (const uint8_t*)boot_info->rsdp_paddr;
    if (!memcmp(p, "RSD PTR ", 8) && checksum_ok(p, 20)) return p;
  }
  for (uint64_t a = 0xe0000; a < 0x100000; a += 16) {
    const uint8_t* p = (const uint8_t*)a;
    if (!memcmp(p, "RSD PTR ", 8) && checksum_ok(p, 20)) return p;
  }
  return 0;
}

const struct acpi_header* acpi_table_at(uint64_t paddr) {
  if (!paddr || !mapped(paddr, sizeof(struct acpi_header))) return 0;
  const struct acpi_header* h = (const struct acpi_header*)paddr;
  if (h->length < sizeof(*h) || h->length > (1u << 20) ||
      !mapped(paddr, h->length) || !checksum_ok(h, h->length))
    return 0;
  return h;
}

const struct acpi_header* acpi_find_table(const char* signature) {
  const uint8_t* rsdp = find_rsdp();
  if (!rsdp) return 0;
  uint8_t revision = rsdp[15];
  uint64_t xsdt = 0;
  uint32_t rsdt;
  memcpy(&rsdt, rsdp + 16, 4);
  if (revision >= 2) memcpy(&xsdt, rsdp + 24, 8);
  const struct acpi_header* root = acpi_table_at(xsdt);
  uint32_t entry_size = 8;
  if (!root) {
    root = acpi_table_at(rsdt);
    entry_size = 4;
  }
  if (!root) return 0;
  const uint8_t* e = (const uint8_t*)(root + 1);
  uint32_t n = (root->length - sizeof(*root)) / entry_size;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t paddr = 0;
    memcpy(&paddr, e + i * entry_size, entry_size);
    const struct acpi_header* t = acpi_table_at(paddr);
    if (t && !memcmp(t->signature, signature, 4)) return t;
  }
  return 0;
}

static void add_cpu(struct cpu_list* c, uint32_t id) {
  for (uint32_t i = 0; i < c->count; i++)
    if (c->apic_id[i] == id) return;
  if (c->count < MAX_CPUS) c->apic_id[c->count] = id;
  c->count++;  // may exceed MAX_CPUS: find_cpus reports it
}

static void parse_madt(const struct acpi_header* madt, struct cpu_list* c) {
  const uint8_t* p = (const uint8_t*)madt + sizeof(*madt) + 8;
  const uint8_t* end = (const uint8_t*)madt + madt->length;
  while (p + 2 <= end && p[1] >= 2 && p + p[1] <= end) {
    uint32_t flags;
    if (p[0] == 0 && p[1] >= 8) {  // processor local APIC
      memcpy(&flags, p + 4, 4);
      if (flags & 3) add_cpu(c, p[3]);  // enabled or online-capable
    } else if (p[0] == 9 && p[1] >= 16) {  // processor local x2APIC
      uint32_t id;
      memcpy(&id, p + 4, 4);
      memcpy(&flags, p + 8, 4);
      if (flags & 3) add_cpu(c, id);
    }
    p += p[1];
  }
}

// ---- MP table (Intel MultiProcessor Specification 1.4) ----
static const uint8_t* scan_mp(uint64_t start, uint64_t len) {
  for (uint64_t a = start; a + 16 <= start + len; a += 16) {
    const uint8_t* p = (const uint8_t*)a;
    if (!memcmp(p, "_MP_", 4) && p[8] == 1 && checksum_ok(p, 16)) return p;
  }
  return 0;
}

static const uint8_t* find_mp_config(void) {
  uint16_t ebda_seg;
  memcpy(&ebda_seg, (const void*)0x40e, 2);
  const uint8_t* fp = 0;
  if (ebda_seg >= 0x1000 && ebda_seg < 0xa000)  // plausible EBDA only
    fp = scan_mp((uint64_t)ebda_seg << 4, 1024);
  if (!fp) fp = scan_mp(0x9fc00, 1024);
  if (!fp) fp = scan_mp(0xf0000, 0x10000);
  if (!fp) return 0;
  uint32_t cfg;
  memcpy(&cfg, fp + 4, 4);
  if (!cfg || !mapped(cfg, 44)) return 0;
  const uint8_t* t = (const uint8_t*)(uint64_t)cfg;
  uint16_t len;
  memcpy(&len, t + 4, 2);
  if (memcmp(t, "PCMP", 4) || len < 44 || !checksum_ok(t, len)) return 0;
  return t;
}

static void parse_mp(const uint8_t* t, struct cpu_list* c) {
  uint16_t len, count;
  memcpy(&len, t + 4, 2);
  memcpy(&count, t + 34, 2);
  const uint8_t* p = t + 44;
  const uint8_t* end = t + len;
  for (uint16_t i = 0; i < count && p < end; i++) {
    if (p[0] == 0) {  // processor: type, apic id, version, flags (bit 0 EN)
      if (p + 20 > end) break;
      if (p[3] & 1) add_cpu(c, p[1]);
      p += 20;
    } else if (p[0] <= 4) {
      p += 8;
    } else {
      break;  // unknown entry type: stop rather than guess its length
    }
  }
}

int find_cpus(struct cpu_list* c) {
  c->count = 0;
  const struct acpi_header* madt = acpi_find_table("APIC");
  if (madt) {
    parse_madt(madt, c);
    c->source = "acpi-madt";
    c->table_paddr = (uint64_t)madt;
  } else {
    const uint8_t* mp = find_mp_config();
    if (!mp) return -1;
    parse_mp(mp, c);
    c->source = "mp-table";
    c->table_paddr = (uint64_t)mp;
  }
  if (c->count == 0 || c->count > MAX_CPUS) return -1;
  for (uint32_t i = 1; i < c->count; i++)  // insertion sort
    for (uint32_t j = i; j > 0 && c->apic_id[j - 1] > c->apic_id[j]; j--) {
      uint32_t t = c->apic_id[j];
      c->apic_id[j] = c->apic_id[j - 1];
      c->apic_id[j - 1] = t;
    }
  return 0;
}

// ---- AP startup ----
static int overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return blen && a < b + blen && b < a + alen;
}

// The first free RAM page in [0x1000, 0x9f000) that holds none of the
// boot structures: SIPI vectors address pages below 1 MiB.
static uint64_t pick_trampoline(void) {
  const struct hvm_memmap_entry* m = boot_memmap();
  for (uint64_t page = 0x1000; page < 0x9f000; page += 0x1000) {
    int ram = 0;
    for (uint32_t i = 0; i < boot_memmap_count(); i++)
      if (m[i].type == HVM_MEMMAP_TYPE_RAM && m[i].addr <= page &&
          page + 0x1000 <= m[i].addr + m[i].size)
        ram = 1;
    if (!ram) continue;
    uint64_t info = (uint64_t)boot_info;
    if (overlaps(page, 0x1000, info, sizeof(*boot_info)) ||
        overlaps(page, 0x1000, boot_info->memmap_paddr,
                 boot_memmap_count() * sizeof(*m)) ||
        overlaps(page, 0x1000, boot_info->cmdline_paddr,
                 strlen(boot_cmdline()) + 1) ||
        overlaps(page, 0x1000, boot_info->modlist_paddr,
                 boot_info->nr_modlist * 32ull))
      continue;
    return page;
  }
  return 0;
}

uint64_t trampoline_paddr(void) { return tramp; }

// C entry of an AP, in long mode on its own stack (from entry.S).
void ap_start(void) {
  load_idt();
  __atomic_store_n(&ap_online[lapic_id() & 0xff], 1, __ATOMIC_RELEASE);
}

static int wait_online(uint32_t id, uint32_t us) {
  for (uint32_t t = 0; t < us; t += 100) {
    if (__atomic_load_n(&ap_online[id & 0xff], __ATOMIC_ACQUIRE)) return 0;
    udelay(100);
  }
  return __atomic_load_n(&ap_online[id & 0xff], __ATOMIC_ACQUIRE) ? 0 : -1;
}

int start_ap(uint32_t apic_id, uint32_t timeout_ms) {
  if (apic_id > 255 || aps_started >= MAX_CPUS) return -1;
  if (!tramp) {
    tramp = pick_trampoline();
    if (!tramp) return -1;
    memcpy((void*)tramp, ap_trampoline, ap_trampoline_end - ap_trampoline);
  }
  ap_stack_top = (uint64_t)(ap_stacks[aps_started++] + AP_STACK_SIZE);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  uint32_t vector = (uint32_t)(tramp >> 12);
  // INIT (assert, level), 10 ms, SIPI, 200 us, SIPI unless it is up.
  if (lapic_send_ipi(apic_id, 0x4500)) return -1;
  udelay(10000);
  if (lapic_send_ipi(apic_id, 0x4600 | vector)) return -1;
  if (wait_online(apic_id, 200) == 0) return 0;
  if (lapic_send_ipi(apic_id, 0x4600 | vector)) return -1;
  return wait_online(apic_id, timeout_ms * 1000);
}
