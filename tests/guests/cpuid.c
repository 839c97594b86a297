// cpuid: prints the CPUID leaves that CPU templates and PV features change.
// Host-side tests parse the lines
//   cpuid <leaf>.<subleaf>: eax=%08x ebx=%08x ecx=%08x edx=%08x
// (leaf and subleaf in hex without 0x, e.g. "cpuid 40000001.0: ...").
#include "runtime.h"

static void show(uint32_t leaf, uint32_t subleaf) {
  struct cpuid_regs r = cpuid(leaf, subleaf);
  printf("cpuid %x.%x: eax=%08x ebx=%08x ecx=%08x edx=%08x\n", leaf, subleaf,
         r.eax, r.ebx, r.ecx, r.edx);
}

int main(void) {
  show(0, 0);
  show(1, 0);
  show(7, 0);
  show(0xd, 0);
  show(0x80000000, 0);
  show(0x80000001, 0);
  if (cpu_has_hypervisor()) {
    show(0x40000000, 0);
    show(0x40000001, 0);
  } else {
    printf("cpuid: no hypervisor bit\n");
  }
  printf("cpuid: ok\n");
  return 0;
}
