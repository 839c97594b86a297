// Finding CPUs (ACPI MADT, else the MP table) and starting APs with
// INIT-SIPI-SIPI through a real-mode trampoline below 1 MiB.
//
//   struct cpu_list cpus;
//   if (find_cpus(&cpus) < 0) fail("no MADT and no MP table");
//   for (uint32_t i = 0; i < cpus.count; i++)
//     if (cpus.apic_id[i] != lapic_id() && start_ap(cpus.apic_id[i], 5000))
//       fail("cpu %u did not come online", cpus.apic_id[i]);
#ifndef KINDLING_GUEST_SMP_H_
#define KINDLING_GUEST_SMP_H_

#include "runtime.h"

#define MAX_CPUS 64

// ---- ACPI ----
struct __attribute__((packed)) acpi_header {
  char signature[4];
  uint32_t length;
  uint8_t revision, checksum;
  char oem_id[6], oem_table_id[8];
  uint32_t oem_revision, creator_id, creator_revision;
};

// The table at `paddr` if it is mapped and its checksum holds, else 0.
const struct acpi_header* acpi_table_at(uint64_t paddr);
// The ACPI table with `signature` ("APIC", "FACP"), through the XSDT (else
// the RSDT) of the RSDP from the boot info or the BIOS area; 0 if none.
const struct acpi_header* acpi_find_table(const char* signature);

struct cpu_list {
  uint32_t count;
  uint32_t apic_id[MAX_CPUS];  // sorted ascending
  const char* source;          // "acpi-madt" or "mp-table"
  uint64_t table_paddr;        // the MADT or the MP configuration table
};

// Fills `cpus` with the enabled CPUs. Returns 0, or -1 if neither an ACPI
// MADT nor an MP table was found (or more than MAX_CPUS CPUs).
int find_cpus(struct cpu_list* cpus);

// Set by each AP (by APIC ID) once it runs C code in long mode.
extern volatile uint8_t ap_online[256];

// Starts one AP and waits up to timeout_ms for it to check in. Returns 0
// on success, -1 on timeout or if no trampoline page could be found.
int start_ap(uint32_t apic_id, uint32_t timeout_ms);

// The trampoline's physical address (valid after the first start_ap).
uint64_t trampoline_paddr(void);

#endif  // KINDLING_GUEST_SMP_H_
