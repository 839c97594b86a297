// Ring-0 setup of the test-guest runtime: TSS, IDT, the identity map above
// 4 GiB, hvm_start_info checks, interrupt dispatch and the ring-3 gate.
#include "runtime.h"

#define KERNEL_CS 0x18
#define USER_STACK_SIZE (64 * 1024)
#define INTR_STACK_SIZE (16 * 1024)

enum { SYS_PUTS = 1, SYS_EXIT_USER = 2, SYS_EXIT_VM = 3 };

struct __attribute__((packed)) tss64 {
  uint32_t reserved0;
  uint64_t rsp0, rsp1, rsp2;
  uint64_t reserved1;
  uint64_t ist[7];
  uint64_t reserved2;
  uint16_t reserved3;
  uint16_t iomap_base;
};

struct idt_entry {
  uint16_t offset_low, selector;
  uint8_t ist, type_attr;
  uint16_t offset_mid;
  uint32_t offset_high, zero;
};

extern uint64_t gdt_tss[2];
extern uint64_t pml4[512], pdpt[512];
extern uint64_t pd_high_pool[][512];
extern char isr_stubs[];
long run_user_asm(user_fn fn, long arg, uint64_t rflags, uint64_t user_rsp);
__attribute__((noreturn)) void user_return_asm(long value);

const struct hvm_start_info* boot_info;
static struct tss64 tss;
static struct idt_entry idt[256] __attribute__((aligned(16)));
static irq_handler handlers[256];
static uint64_t mapped_end = 4ull << 30;
static char user_stack[USER_STACK_SIZE] __attribute__((section(".noinit"),
                                                       aligned(16)));
static char intr_stack[INTR_STACK_SIZE] __attribute__((section(".noinit"),
                                                       aligned(16)));

static void set_gate(int vector, int dpl) {
  uint64_t addr = (uint64_t)(isr_stubs + 16 * vector);
  struct idt_entry* e = &idt[vector];
  e->offset_low = (uint16_t)addr;
  e->selector = KERNEL_CS;
  e->ist = 0;
  e->type_attr = (uint8_t)(0x8e | (dpl << 5));  // present 64-bit intr gate
  e->offset_mid = (uint16_t)(addr >> 16);
  e->offset_high = (uint32_t)(addr >> 32);
  e->zero = 0;
}

// Loads this CPU's IDT (shared by all CPUs).
void load_idt(void) {
  struct __attribute__((packed)) {
    uint16_t limit;
    uint64_t base;
  } d = {sizeof(idt) - 1, (uint64_t)idt};
  __asm__ volatile("lidt %0" : : "m"(d));
}

static void setup_cpu_tables(void) {
  uint64_t base = (uint64_t)&tss;
  uint64_t limit = sizeof(tss) - 1;
  tss.rsp0 = (uint64_t)(intr_stack + INTR_STACK_SIZE);
  tss.iomap_base = sizeof(tss);  // no I/O bitmap: ring 3 gets no ports
  gdt_tss[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) |
               (0x89ull << 40) | (((limit >> 16) & 0xf) << 48) |
               (((base >> 24) & 0xff) << 56);
  gdt_tss[1] = base >> 32;
  __asm__ volatile("ltr %w0" : : "r"(0x30));
  for (int v = 0; v < 256; v++) set_gate(v, v == SYSCALL_VECTOR ? 3 : 0);
  load_idt();
}

static uint64_t memmap_ram_end(void) {
  uint64_t end = 0;
  const struct hvm_memmap_entry* m = boot_memmap();
  for (uint32_t i = 0; i < boot_memmap_count(); i++) {
    if (m[i].type != HVM_MEMMAP_TYPE_RAM) continue;
    uint64_t e = m[i].addr + m[i].size;
    if (e < m[i].addr) e = ~0ull;  // overflow: clamp
    if (e > end) end = e;
  }
  return end;
}

// Extends the identity map (2 MiB user pages) over RAM above 4 GiB.
static void map_high_ram(void) {
  uint64_t end = memmap_ram_end();
  uint64_t limit = (uint64_t)MAX_MAPPED_GIB << 30;
  if (end > limit) end = limit;
  uint64_t gib_end = (end + (1ull << 30) - 1) >> 30;
  for (uint64_t g = 4; g < gib_end; g++) {
    uint64_t* pd = pd_high_pool[g - 4];
    for (uint64_t j = 0; j < 512; j++)
      pd[j] = ((g << 30) + (j << 21)) | 0x87;  // P W U PS
    pdpt[g] = (uint64_t)pd | 0x7;
  }
  if (gib_end > 4) mapped_end = gib_end << 30;
}

int mapped(uint64_t addr, uint64_t size) {
  return addr + size >= addr && addr + size <= mapped_end;
}

uint64_t boot_ram_end(void) { return memmap_ram_end(); }

const char* boot_cmdline(void) {
  if (!boot_info->cmdline_paddr || !mapped(boot_info->cmdline_paddr, 1))
    return "";
  return (const char*)boot_info->cmdline_paddr;
}

uint32_t boot_memmap_count(void) {
  if (boot_info->version < 1 || !boot_info->memmap_paddr) return 0;
  uint32_t n = boot_info->memmap_entries;
  if (n > 128) n = 128;  // bound what we trust
  return n;
}

const struct hvm_memmap_entry* boot_memmap(void) {
  return (const struct hvm_memmap_entry*)boot_info->memmap_paddr;
}

// Called from entry.S on the BSP in long mode with ring-0 stack.
int runtime_start(uint32_t start_info_paddr) {
  setup_cpu_tables();
  boot_info = (const struct hvm_start_info*)(uint64_t)start_info_paddr;
  if (boot_info->magic != HVM_START_MAGIC)
    fail("hvm_start_info at %#x has magic %#x, want %#x", start_info_paddr,
         boot_info->magic, HVM_START_MAGIC);
  if (boot_memmap_count() &&
      !mapped(boot_info->memmap_paddr,
              boot_memmap_count() * sizeof(struct hvm_memmap_entry)))
    fail("memmap at %#lx is not below 4 GiB", boot_info->memmap_paddr);
  map_high_ram();
  return main();
}

void set_irq_handler(int vector, irq_handler h) {
  if (vector >= 32 && vector < 256 && vector != SYSCALL_VECTOR)
    handlers[vector] = h;
}

static void syscall(struct irq_frame* f) {
  switch (f->rax) {
    case SYS_PUTS:
      puts_raw((const char*)f->rdi);
      return;
    case SYS_EXIT_USER:
      user_return_asm((long)f->rdi);
    case SYS_EXIT_VM:
      exit_vm((int)f->rdi);
    default:
      fail("unknown syscall %lu from ring 3", f->rax);
  }
}

void interrupt_dispatch(struct irq_frame* f) {
  uint64_t v = f->vector;
  if (v == SYSCALL_VECTOR && (f->cs & 3) == 3) {
    syscall(f);
    return;
  }
  // kvm_pvm hosts raise #UD for a software interrupt from ring 3 instead
  // of delivering it through the IDT gate: complete it here.
  if (v == 6 && (f->cs & 3) == 3 && mapped(f->rip, 2) &&
      *(const uint16_t*)f->rip == (0x80 << 8 | 0xcd)) {
    f->rip += 2;
    syscall(f);
    return;
  }
  if (v < 256 && handlers[v]) {
    handlers[v](f);
    return;
  }
  if (v == SPURIOUS_VECTOR) return;  // no EOI for spurious interrupts
  uint64_t cr2;
  __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
  fail("unexpected %s %lu (error %#lx) at rip %#lx cs %#lx cr2 %#lx",
       v < 32 ? "exception" : "interrupt", v, f->error, f->rip, f->cs, cr2);
}

long run_user(user_fn fn, long arg, int interrupts) {
  uint64_t rflags = 0x2 | (interrupts ? 0x200 : 0);
  return run_user_asm(fn, arg, rflags,
                      (uint64_t)(user_stack + USER_STACK_SIZE));
}

static long int80(long nr, long arg) {
  long ret = nr;
  __asm__ volatile("int $0x80" : "+a"(ret) : "D"(arg) : "memory");
  return ret;
}

void user_exit(long value) {
  int80(SYS_EXIT_USER, value);
  __builtin_unreachable();
}

// ---- serial, exit ----
static void serial_putc(char c) {
  for (int i = 0; i < 100000 && !(inb(0x3fd) & 0x20); i++) {
  }
  outb(0x3f8, (uint8_t)c);
}

void puts_raw(const char* s) {
  if (current_ring() == 3) {
    int80(SYS_PUTS, (long)s);
    return;
  }
  for (; *s; s++) {
    if (*s == '\n') serial_putc('\r');
    serial_putc(*s);
  }
}

void exit_vm(int code) {
  if (current_ring() == 3) int80(SYS_EXIT_VM, code);
  outb(0xf4, (uint8_t)code);
  for (;;) __asm__ volatile("cli; hlt");
}

void printf(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  puts_raw(buf);
}

void fail(const char* fmt, ...) {
  char buf[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  printf("FAIL: %s\n", buf);
  exit_vm(1);
}

// ---- CPUID ----
int cpu_has_hypervisor(void) { return (cpuid(1, 0).ecx >> 31) & 1; }

uint32_t kvm_cpuid_base(void) {
  if (!cpu_has_hypervisor()) return 0;
  struct cpuid_regs r = cpuid(0x40000000, 0);
  return (r.ebx == 0x4b4d564b && r.ecx == 0x564b4d56 && r.edx == 0x4d)
             ? 0x40000000
             : 0;
}

// ---- I/O APIC ----
#define IOAPIC_BASE 0xfec00000ul

static uint32_t ioapic_read(uint32_t reg) {
  *(volatile uint32_t*)IOAPIC_BASE = reg;
  return *(volatile uint32_t*)(IOAPIC_BASE + 0x10);
}
static void ioapic_write(uint32_t reg, uint32_t v) {
  *(volatile uint32_t*)IOAPIC_BASE = reg;
  *(volatile uint32_t*)(IOAPIC_BASE + 0x10) = v;
}

// The 8259s (when the VMM has them) would deliver ISA IRQs as well, at
// vector base 0 (not programmed) through LINT0's ExtINT: mask them, as an
// OS that uses the I/O APIC does. Without a PIC the ports go nowhere.
static void mask_pic(void) {
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
}

void ioapic_route(int irq, int vector) {
  mask_pic();
  uint32_t max_entry = (ioapic_read(1) >> 16) & 0xff;
  if (irq < 0 || (uint32_t)irq > max_entry)
    fail("ioapic: irq %d beyond the IOAPIC's %u pins", irq, max_entry + 1);
  ioapic_write(0x10 + 2 * irq + 1, lapic_id() << 24);
  ioapic_write(0x10 + 2 * irq, (uint32_t)vector);
}

// ---- local APIC ----
void lapic_enable(void) {
  lapic_write(LAPIC_SVR, lapic_read(LAPIC_SVR) | 0x100 | SPURIOUS_VECTOR);
}

int lapic_send_ipi(uint32_t apic_id, uint32_t lo) {
  lapic_write(LAPIC_ICR_HI, apic_id << 24);
  lapic_write(LAPIC_ICR_LO, lo);
  for (int i = 0; i < 1000000; i++)
    if (!(lapic_read(LAPIC_ICR_LO) & (1u << 12))) return 0;
  return -1;
}

void udelay(uint32_t us) {
  lapic_write(LAPIC_TIMER_DIV, 0x3);            // divide by 16
  lapic_write(LAPIC_LVT_TIMER, 1u << 16);       // masked, one-shot
  uint64_t count = (uint64_t)us * 1000 / 16;    // 1 GHz APIC bus
  while (count) {
    uint32_t chunk = count > 0xffffffffu ? 0xffffffffu : (uint32_t)count;
    lapic_write(LAPIC_TIMER_INIT, chunk);
    while (lapic_read(LAPIC_TIMER_CUR) != 0) cpu_relax();
    count -= chunk;
  }
}

uint64_t tsc_per_ms(void) {
  static uint64_t cached;
  if (!cached) {
    uint64_t t0 = rdtsc();
    udelay(10000);
    cached = (rdtsc() - t0) / 10;
    if (!cached) cached = 1;
  }
  return cached;
}

// struct pvclock_vcpu_time_info (Linux arch/x86/include/asm/pvclock-abi.h).
struct pvclock_time_info {
  uint32_t version;
  uint32_t pad0;
  uint64_t tsc_timestamp;
  uint64_t system_time;
  uint32_t tsc_to_system_mul;
  int8_t tsc_shift;
  uint8_t flags;
  uint8_t pad[2];
} __attribute__((packed));
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01u
#define KVM_FEATURE_CLOCKSOURCE2 3

uint64_t tsc_per_ms_kvmclock(void) {
  static uint64_t cached;
  static volatile struct pvclock_time_info pv __attribute__((aligned(64)));
  if (cached) return cached;
  uint32_t base = kvm_cpuid_base();
  if (!base || !(cpuid(base + 1, 0).eax & (1u << KVM_FEATURE_CLOCKSOURCE2))) return 0;
  wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (uint64_t)&pv | 1);  // KVM fills it before we run again
  uint32_t mul = 0;
  int8_t shift = 0;
  for (int tries = 0; tries < 1000 && !mul; tries++) {
    uint32_t v = pv.version;
    __asm__ volatile("" ::: "memory");
    mul = pv.tsc_to_system_mul;
    shift = pv.tsc_shift;
    __asm__ volatile("" ::: "memory");
    if ((v & 1) || v != pv.version) mul = 0;
  }
  wrmsr(MSR_KVM_SYSTEM_TIME_NEW, 0);
  if (!mul) return 0;
  // ns = ((tsc << shift) or (tsc >> -shift)) * mul >> 32, so one ms is
  // (10^6 << 32) / mul TSC ticks before the shift is undone.
  uint64_t t = (1000000ull << 32) / mul;
  cached = shift >= 0 ? t >> shift : t << -shift;
  return cached;
}
