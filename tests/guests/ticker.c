// ticker: a long-running ring-3 workload for save/restore and migration
// tests. It prints `ticker: tick K sum S` twenty times, where S folds every
// iteration so far, then `ticker: done` and exits 0. A guest restored into
// another VM must carry on with the next tick and the same running sum.
// With `forever` on the command line it never stops (for signal tests).
#include "runtime.h"

#define TICKS 20
#define SPINS (20u * 1000u * 1000u)

static long ring3_ticker(long forever) {
  volatile uint64_t sum = 0;
  for (uint32_t tick = 1; forever || tick <= TICKS; tick++) {
    for (uint32_t i = 0; i < SPINS; i++) sum = sum * 31 + i + tick;
    printf("ticker: tick %u sum %lx\n", tick, (uint64_t)sum);
  }
  return 0;
}

int main(void) {
  printf("ticker: start\n");
  long forever = 0;
  for (const char* c = boot_cmdline(); *c; c++) {
    const char* w = "forever";
    int i = 0;
    while (w[i] && c[i] == w[i]) i++;
    if (!w[i]) forever = 1;
  }
  long r = run_user(ring3_ticker, forever, 0);
  if (r != 0) fail("ticker returned %ld", r);
  printf("ticker: done\n");
  return 0;
}
