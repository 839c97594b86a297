// smp: finds the CPUs (ACPI MADT, else MP table), starts every AP with
// INIT-SIPI-SIPI and waits for each to check in from long mode.
#include "smp.h"

int main(void) {
  struct cpu_list cpus;
  lapic_enable();
  if (find_cpus(&cpus) < 0)
    fail("no usable ACPI MADT or MP table (or more than %d cpus)", MAX_CPUS);
  uint32_t bsp = lapic_id();
  printf("smp: %u cpus in %s at %#lx, bsp apic id %u\n", cpus.count,
         cpus.source, cpus.table_paddr, bsp);
  ap_online[bsp & 0xff] = 1;
  int bsp_listed = 0;
  for (uint32_t i = 0; i < cpus.count; i++) {
    uint32_t id = cpus.apic_id[i];
    if (id == bsp) {
      bsp_listed = 1;
      continue;
    }
    if (start_ap(id, 5000))
      fail("cpu %u did not come online (trampoline at %#lx)", id,
           trampoline_paddr());
  }
  printf("smp: trampoline at %#lx\n", trampoline_paddr());
  if (!bsp_listed) fail("bsp apic id %u is not in the %s", bsp, cpus.source);
  for (uint32_t i = 0; i < cpus.count; i++)
    printf("smp: cpu %u online\n", cpus.apic_id[i]);
  printf("smp: %u cpus ok\n", cpus.count);
  return 0;
}
