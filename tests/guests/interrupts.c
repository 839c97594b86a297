// interrupts: counts LAPIC timer interrupts (periodic, vector 0x20) and
// uses PV-EOI when KVM offers it (CPUID 0x40000001 EAX bit 6).
//
// Where the CPU waits: in ring 3, busy, with IF=1, until the count is
// reached or a TSC deadline passes. Not `hlt` in ring 0, because (1) a lost
// interrupt would leave `hlt` asleep forever, while the ring-3 loop gives
// up at its deadline and reports FAIL; (2) on kvm_pvm hosts ring-0 code is
// emulated, ring-3 code native, so the wait costs no emulation; (3) each
// interrupt then costs only its injection and (without PV-EOI) the EOI
// write — no halt exits — which keeps exit counts per interrupt readable
// for the host-side PV-EOI test.
#include "runtime.h"

#define TIMER_VECTOR 0x20
#define TARGET 200
#define PERIOD_US 1000
#define MSR_KVM_PV_EOI_EN 0x4b564d04
#define KVM_FEATURE_PV_EOI 6

static volatile uint32_t ticks;
static volatile uint32_t eoi_skipped;
// Interrupts after the TARGET-th: masking LVT_TIMER does not clear a tick
// that was already latched in the IRR (under nested TCG a handler can take
// longer than the 1 ms period), so one more may arrive. Counted apart so
// `ticks` and `eoi_skipped` describe exactly TARGET interrupts.
static volatile uint32_t late;
static int pv_eoi;
// KVM sets bit 0 when the EOI of the interrupt it injects may be skipped.
static volatile uint32_t pv_eoi_flag __attribute__((aligned(4)));
static uint64_t deadline;

// One `btr`, as Linux does: only this vCPU and KVM (while this vCPU is
// not running) touch the flag, so no lock prefix and no cmpxchg loop.
static inline int test_and_clear_bit0(volatile uint32_t* p) {
  uint8_t was_set;
  __asm__ volatile("btrl $0, %0; setc %1" : "+m"(*p), "=q"(was_set) : :
                   "memory", "cc");
  return was_set;
}

static void timer_handler(struct irq_frame* f) {
  (void)f;
  int counted = ticks < TARGET;
  if (counted && ++ticks == TARGET)
    lapic_write(LAPIC_LVT_TIMER, 1u << 16);  // mask
  if (!counted) late++;
  if (pv_eoi && test_and_clear_bit0(&pv_eoi_flag))
    eoi_skipped += counted;
  else
    lapic_eoi();
}

static long ring3_wait(long unused) {
  (void)unused;
  uint64_t spins = 0;
  while (ticks < TARGET && rdtsc() < deadline) spins++;
  return (long)spins;
}

int main(void) {
  uint32_t kvm = kvm_cpuid_base();
  if (kvm && cpuid(kvm, 0).eax >= kvm + 1)
    pv_eoi = (cpuid(kvm + 1, 0).eax >> KVM_FEATURE_PV_EOI) & 1;
  printf("interrupts: pv-eoi %s\n", pv_eoi ? "on" : "off");

  lapic_enable();
  set_irq_handler(TIMER_VECTOR, timer_handler);
  deadline = rdtsc() + tsc_per_ms() * (TARGET * PERIOD_US / 1000 * 10 + 2000);
  if (pv_eoi) {
    pv_eoi_flag = 0;
    wrmsr(MSR_KVM_PV_EOI_EN, (uint64_t)&pv_eoi_flag | 1);
  }
  lapic_write(LAPIC_TIMER_DIV, 0x3);  // divide by 16: 62.5 MHz
  lapic_write(LAPIC_LVT_TIMER, TIMER_VECTOR | (1u << 17));  // periodic
  lapic_write(LAPIC_TIMER_INIT, PERIOD_US * 1000 / 16);
  run_user(ring3_wait, 0, /*interrupts=*/1);
  lapic_write(LAPIC_LVT_TIMER, 1u << 16);
  lapic_write(LAPIC_TIMER_INIT, 0);
  if (pv_eoi) wrmsr(MSR_KVM_PV_EOI_EN, 0);

  printf("interrupts: %u timer interrupts, %u eoi writes skipped\n", ticks,
         eoi_skipped);
  if (late) printf("interrupts: %u more already pending at the mask\n", late);
  if (ticks < TARGET)
    fail("only %u of %u timer interrupts before the deadline", ticks, TARGET);
  printf("interrupts: ok\n");
  return 0;
}
