// power_button: a guest that acts on the ACPI power button, as a
// hardware-reduced ACPI platform offers it (the way Linux's GED and button
// drivers do, without an AML interpreter): the FADT's sleep control
// register says how to power off, the DSDT's Generic Event Device
// (ACPI0013) says which interrupt means "button pressed". The guest routes
// that GSI, prints `power_button: waiting`, waits (in ring 3, interrupts on)
// for the press, prints `power_button: pressed`, and powers off by writing
// SLP_TYP 5 | SLP_EN to the sleep control register. The VMM must then stop
// the VM with status 0; if the guest is still running it fails.
#include "runtime.h"
#include "smp.h"

#define GED_VECTOR 0x40
#define WAIT_MS 60000
#define SLP_EN 0x20
#define SOFT_OFF 5

static volatile uint32_t presses;
static uint64_t deadline;

static void ged_handler(struct irq_frame* f) {
  (void)f;
  presses++;
  lapic_eoi();
}

static long ring3_wait(long unused) {
  (void)unused;
  while (!presses && rdtsc() < deadline) {
  }
  return presses;
}

// The FADT's SLEEP_CONTROL_REG (offset 244): a system-I/O port, or 0.
static uint16_t sleep_control_port(const struct acpi_header* fadt) {
  if (fadt->length < 256) return 0;
  const uint8_t* gas = (const uint8_t*)fadt + 244;
  uint64_t port;
  memcpy(&port, gas + 4, 8);
  if (gas[0] != 1 || port == 0 || port > 0xffff) return 0;
  return (uint16_t)port;
}

// The DSDT, through X_DSDT (offset 140) or DSDT (offset 40).
static const struct acpi_header* dsdt_of(const struct acpi_header* fadt) {
  uint64_t x = 0;
  uint32_t legacy = 0;
  if (fadt->length >= 148) memcpy(&x, (const uint8_t*)fadt + 140, 8);
  memcpy(&legacy, (const uint8_t*)fadt + 40, 4);
  const struct acpi_header* d = acpi_table_at(x);
  return d ? d : acpi_table_at(legacy);
}

// The GSI of the first Extended Interrupt descriptor (0x89, length 6, one
// interrupt) after the GED's _HID string, or -1.
static int ged_gsi(const struct acpi_header* dsdt) {
  const uint8_t* p = (const uint8_t*)dsdt;
  uint32_t n = dsdt->length;
  for (uint32_t i = 0; i + 8 <= n; i++) {
    if (memcmp(p + i, "ACPI0013", 8)) continue;
    for (uint32_t j = i + 8; j + 9 <= n && j < i + 128; j++) {
      if (p[j] == 0x89 && p[j + 1] == 0x06 && p[j + 2] == 0x00 && p[j + 4] == 1) {
        uint32_t gsi;
        memcpy(&gsi, p + j + 5, 4);
        return gsi < 24 ? (int)gsi : -1;
      }
    }
  }
  return -1;
}

int main(void) {
  const struct acpi_header* fadt = acpi_find_table("FACP");
  if (!fadt) fail("no FADT");
  uint16_t port = sleep_control_port(fadt);
  if (!port) fail("the FADT has no sleep control register");
  const struct acpi_header* dsdt = dsdt_of(fadt);
  if (!dsdt) fail("no DSDT");
  int gsi = ged_gsi(dsdt);
  if (gsi < 0) fail("no Generic Event Device (ACPI0013) with an interrupt in the DSDT");

  lapic_enable();
  set_irq_handler(GED_VECTOR, ged_handler);
  ioapic_route(gsi, GED_VECTOR);
  printf("power_button: waiting (GED gsi %d, sleep control port %#x)\n", gsi, port);
  deadline = rdtsc() + tsc_per_ms() * WAIT_MS;
  run_user(ring3_wait, 0, /*interrupts=*/1);
  if (!presses) fail("no power button press in %u ms", WAIT_MS);
  printf("power_button: pressed, powering off\n");
  outb(port, (SOFT_OFF << 2) | SLP_EN);
  udelay(100000);
  fail("still running 100 ms after writing S5 to the sleep control register");
  return 1;
}
