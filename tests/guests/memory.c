// memory: writes an address-derived pattern over every RAM page of the
// hvm_start_info memmap that the guest itself does not use (its image,
// stacks and page tables, the start info, memmap and cmdline), below and
// above the 32-bit MMIO hole, then reads it all back.
//
// The loops run in ring 3: on kvm_pvm hosts ring-0 code is emulated one
// instruction at a time, ring-3 code runs natively. Writing everything
// before verifying anything also catches two addresses that alias the same
// host page.
#include "runtime.h"

#define MAX_RANGES 64
#define MAX_EXCLUDES 8
#define PAGE 4096ull

struct range {
  uint64_t start, end;
};

static struct range ranges[MAX_RANGES];
static uint32_t nranges;
static struct range excludes[MAX_EXCLUDES];
static uint32_t nexcludes;

struct result {
  uint64_t errors, first_bad, first_got;
};
static struct result result;

static inline uint64_t pattern(uint64_t addr) {
  return (addr * 0x9e3779b97f4a7c15ull) ^ 0xa5a5a5a55a5a5a5aull;
}

static long ring3_check(long unused) {
  (void)unused;
  for (uint32_t i = 0; i < nranges; i++)
    for (uint64_t a = ranges[i].start; a < ranges[i].end; a += 8)
      *(volatile uint64_t*)a = pattern(a);
  for (uint32_t i = 0; i < nranges; i++)
    for (uint64_t a = ranges[i].start; a < ranges[i].end; a += 8) {
      uint64_t got = *(volatile uint64_t*)a;
      if (got != pattern(a) && result.errors++ == 0) {
        result.first_bad = a;
        result.first_got = got;
      }
    }
  return (long)(result.errors != 0);
}

static void exclude(uint64_t addr, uint64_t size) {
  if (!size) return;
  if (nexcludes == MAX_EXCLUDES) fail("too many excluded ranges");
  uint64_t start = addr & ~(PAGE - 1);
  uint64_t end = (addr + size + PAGE - 1) & ~(PAGE - 1);
  excludes[nexcludes++] = (struct range){start, end};
}

static void add_range(uint64_t start, uint64_t end) {
  if (start >= end) return;
  if (nranges == MAX_RANGES) fail("more than %d ranges to test", MAX_RANGES);
  ranges[nranges++] = (struct range){start, end};
}

// Adds [start, end) minus every excluded range (recursively splitting).
static void add_minus_excludes(uint64_t start, uint64_t end, uint32_t from) {
  for (uint32_t i = from; i < nexcludes; i++) {
    struct range x = excludes[i];
    if (x.start < end && start < x.end) {
      if (start < x.start) add_minus_excludes(start, x.start, i + 1);
      if (x.end < end) add_minus_excludes(x.end, end, i + 1);
      return;
    }
  }
  add_range(start, end);
}

int main(void) {
  uint32_t n = boot_memmap_count();
  if (!n) fail("no memmap in hvm_start_info (version %u)", boot_info->version);
  const struct hvm_memmap_entry* m = boot_memmap();
  exclude((uint64_t)__image_start, __image_end - __image_start);
  exclude((uint64_t)boot_info, sizeof(*boot_info));
  exclude(boot_info->memmap_paddr, n * sizeof(*m));
  if (boot_info->cmdline_paddr)
    exclude(boot_info->cmdline_paddr, strlen(boot_cmdline()) + 1);
  if (boot_info->nr_modlist)
    exclude(boot_info->modlist_paddr, boot_info->nr_modlist * 32ull);

  uint32_t regions = 0;
  int above_4g = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (m[i].type != HVM_MEMMAP_TYPE_RAM || !m[i].size) continue;
    uint64_t start = (m[i].addr + PAGE - 1) & ~(PAGE - 1);
    uint64_t end = (m[i].addr + m[i].size) & ~(PAGE - 1);
    if (end < start || !mapped(start, end - start))
      fail("ram %#lx-%#lx is not identity-mapped (limit %d GiB)", m[i].addr,
           m[i].addr + m[i].size, MAX_MAPPED_GIB);
    uint32_t before = nranges;
    add_minus_excludes(start, end, 0);
    if (nranges == before) continue;
    regions++;
    uint64_t bytes = 0;
    for (uint32_t r = before; r < nranges; r++)
      bytes += ranges[r].end - ranges[r].start;
    if (end > (4ull << 30)) above_4g = 1;
    printf("memory: ram %#lx-%#lx: %lu KiB to check\n", m[i].addr,
           m[i].addr + m[i].size, bytes >> 10);
  }
  uint64_t total = 0;
  for (uint32_t r = 0; r < nranges; r++)
    total += ranges[r].end - ranges[r].start;
  if (!total) fail("no RAM to check");

  if (run_user(ring3_check, 0, 0))
    fail("%lu bad words, first at %#lx: got %#lx want %#lx", result.errors,
         result.first_bad, result.first_got, pattern(result.first_bad));
  printf("memory: %lu MiB checked in %u regions%s\n", total >> 20, regions,
         above_4g ? " (some above 4 GiB)" : "");
  printf("memory: ok\n");
  return 0;
}
