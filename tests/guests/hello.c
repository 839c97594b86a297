// hello: the smallest guest. Prints its command line, checks a round trip
// through ring 3 and exits 0.
#include "runtime.h"

static long ring3_hello(long arg) {
  printf("hello: ring %d says hi\n", current_ring());
  return arg + 1;
}

int main(void) {
  printf("kindling hello guest\n");
  printf("cmdline: %s\n", boot_cmdline());
  printf("hello: start_info version %u, %u memmap entries, rsdp %#lx\n",
         boot_info->version, boot_memmap_count(), boot_info->rsdp_paddr);
  const struct hvm_memmap_entry* m = boot_memmap();
  for (uint32_t i = 0; i < boot_memmap_count(); i++)
    printf("hello: memmap %016lx-%016lx type %u\n", m[i].addr,
           m[i].addr + m[i].size, m[i].type);
  long r = run_user(ring3_hello, 41, 0);
  if (r != 42) fail("ring 3 returned %ld, want 42", r);
  printf("hello: back in ring %d\n", current_ring());
  printf("hello: ok\n");
  return 0;
}
