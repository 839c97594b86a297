// The test-guest runtime: what a guest's main() can use.
//
// A guest is freestanding C linked with this runtime into a PVH ELF. The
// 32-bit entry (entry.S) identity-maps the first 4 GiB with 2 MiB pages
// (user-accessible), enters long mode and calls runtime_start(), which sets
// up the GDT/TSS/IDT, maps RAM above 4 GiB, checks hvm_start_info and calls
// main(). main()'s return value is the debug-exit code.
//
//   int main(void) {
//     printf("cmdline: %s\n", boot_cmdline());
//     long r = run_user(my_workload, 0, /*interrupts=*/0);  // ring 3
//     if (r != 42) fail("workload returned %ld", r);
//     return 0;
//   }
//
// Ring 3 may touch all memory and MMIO but no I/O port; printf() and
// exit_vm() work in both rings (ring 3 goes through the int 0x80 gate).
#ifndef KINDLING_GUEST_RUNTIME_H_
#define KINDLING_GUEST_RUNTIME_H_

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

// ---- hvm_start_info (Xen public/arch-x86/hvm/start_info.h) ----
#define HVM_START_MAGIC 0x336ec578u
#define HVM_MEMMAP_TYPE_RAM 1u

struct hvm_start_info {
  uint32_t magic;
  uint32_t version;  // 0: no memmap fields; 1: memmap_* valid
  uint32_t flags;
  uint32_t nr_modlist;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;  // NUL-terminated, 0 if none
  uint64_t rsdp_paddr;     // 0 if the guest has to scan for it
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};

struct hvm_memmap_entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;  // 1 = RAM, 2 = reserved, 3 = ACPI, 4 = NVS, 5 = unusable
  uint32_t reserved;
};

// Physical address of the start info and checked accessors.
extern const struct hvm_start_info* boot_info;
const char* boot_cmdline(void);  // "" if none
uint32_t boot_memmap_count(void);
const struct hvm_memmap_entry* boot_memmap(void);
// Highest RAM end address in the memmap (exclusive).
uint64_t boot_ram_end(void);
// Is [addr, addr+size) inside the identity map? (4 GiB + RAM, max 64 GiB)
int mapped(uint64_t addr, uint64_t size);


// Image bounds (from guest.ld): everything the guest itself occupies,
// stacks and page tables included.
extern char __image_start[], __image_end[];

// ---- port I/O, MSRs, CPUID, misc ----
static inline void outb(uint16_t port, uint8_t v) {
  __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline uint64_t rdmsr(uint32_t msr) {
  uint32_t lo, hi;
  __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
  return ((uint64_t)hi << 32) | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v) {
  __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v),
                   "d"((uint32_t)(v >> 32)) : "memory");
}
struct cpuid_regs {
  uint32_t eax, ebx, ecx, edx;
};
static inline struct cpuid_regs cpuid(uint32_t leaf, uint32_t subleaf) {
  struct cpuid_regs r;
  __asm__ volatile("cpuid"
                   : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx)
                   : "a"(leaf), "c"(subleaf));
  return r;
}
// CPUID.1:ECX bit 31.
int cpu_has_hypervisor(void);
// KVM's CPUID base (0x40000000 with "KVMKVMKVM"), or 0 when not KVM.
uint32_t kvm_cpuid_base(void);

static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline int current_ring(void) {
  uint16_t cs;
  __asm__ volatile("mov %%cs, %0" : "=r"(cs));
  return cs & 3;
}
static inline void irq_enable(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }

// ---- strings and printing ----
void* memset(void* d, int c, size_t n);
void* memcpy(void* d, const void* s, size_t n);
int memcmp(const void* a, const void* b, size_t n);
size_t strlen(const char* s);
// printf subset: %d %u %x %s %c %p %% with l/ll, width and 0-padding
// (e.g. %08x, %lx, %016lx). Ring 0 writes the 8250 at 0x3f8 directly;
// ring 3 formats into a buffer and hands it to the int 0x80 gate.
int vsnprintf(char* buf, size_t size, const char* fmt, va_list ap);
int snprintf(char* buf, size_t size, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
void printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void puts_raw(const char* s);  // no newline added

// Exits the VM through the debug-exit port 0xf4 (QEMU: status (code<<1)|1;
// kindling: exactly code). Never returns.
__attribute__((noreturn)) void exit_vm(int code);
// Prints "FAIL: <why>" and exits with status 1.
__attribute__((noreturn, format(printf, 1, 2))) void fail(const char* fmt,
                                                            ...);

// ---- rings ----
// Runs fn(arg) in ring 3 on the user stack and returns its result once it
// returns (or calls user_exit). interrupts != 0 runs it with IF=1. BSP only,
// not reentrant.
typedef long (*user_fn)(long arg);
long run_user(user_fn fn, long arg, int interrupts);
__attribute__((noreturn)) void user_exit(long value);

// ---- interrupts ----
struct irq_frame {
  uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
  uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
  uint64_t vector, error;
  uint64_t rip, cs, rflags, rsp, ss;
};
typedef void (*irq_handler)(struct irq_frame* f);
// Installs a handler for vector 32..254 (runs in ring 0, IF=0). Keep it
// short: on kvm_pvm hosts every ring-0 instruction is emulated.
void set_irq_handler(int vector, irq_handler h);
#define SYSCALL_VECTOR 0x80
#define SPURIOUS_VECTOR 0xff

// ---- local APIC (xAPIC MMIO) ----
#define LAPIC_BASE 0xfee00000ul
#define LAPIC_ID 0x20
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_CUR 0x390
#define LAPIC_TIMER_DIV 0x3e0
static inline uint32_t lapic_read(uint32_t reg) {
  return *(volatile uint32_t*)(LAPIC_BASE + reg);
}
static inline void lapic_write(uint32_t reg, uint32_t v) {
  *(volatile uint32_t*)(LAPIC_BASE + reg) = v;
}
static inline void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }
static inline uint32_t lapic_id(void) { return lapic_read(LAPIC_ID) >> 24; }
// Software-enables the APIC (SVR) with the spurious vector 0xff.
void lapic_enable(void);
// I/O APIC pin `irq` -> `vector`: fixed delivery to this CPU, active high,
// edge triggered, unmasked (fails the test if the pin does not exist).
void ioapic_route(int irq, int vector);
// Sends an IPI (ICR low word `lo`, e.g. vector | delivery mode) to an
// APIC ID and waits (bounded) for delivery. Returns 0 on success.
int lapic_send_ipi(uint32_t apic_id, uint32_t lo);
// Busy-waits using the APIC timer in one-shot mode, masked (1 GHz APIC
// bus assumed, as KVM and QEMU provide). Not while the timer is in use.
void udelay(uint32_t us);
// TSC ticks per millisecond, measured against the APIC timer once.
uint64_t tsc_per_ms(void);
// TSC ticks per millisecond as KVM's kvmclock states them (exact, where
// the APIC-timer measurement can be off by tens of percent on a loaded or
// nested host), or 0 without kvmclock (not KVM, e.g. QEMU TCG). Ring 0
// (wrmsr) for the first call; cached.
uint64_t tsc_per_ms_kvmclock(void);

int main(void);

#endif  // KINDLING_GUEST_RUNTIME_H_
