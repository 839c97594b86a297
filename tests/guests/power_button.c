// power_button: a guest that acts on the ACPI power button, as a
// hardware-reduced ACPI platform offers it (the way Linux's GED and button
// drivers do, without an AML interpreter): the FADT's sleep control
// register says how to power off, the DSDT's Generic Event Device
// (ACPI0013) says which interrupt means "button pressed", and its \_S5
// package the sleep type of soft-off. The guest routes that GSI, prints
// `power_button: waiting`, waits (in ring 3, interrupts on) for the press,
// prints `power_button: pressed`, and powers off by writing SLP_TYP | SLP_EN
// to the sleep control register. The VMM must then stop the VM with status
// 0; if the guest is still running it fails.
//
// kindling's sleep control register is a system-I/O port, QEMU microvm's
// (whose GED also has the power button, QMP `system_powerdown`) is MMIO:
// both address spaces are served.
#include "runtime.h"
#include "smp.h"

#define GED_VECTOR 0x40
#define WAIT_MS 60000
#define SLP_EN 0x20

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

// An ACPI Generic Address: system memory (0) or system I/O (1).
struct reg {
  uint8_t space;
  uint64_t addr;
};

// The FADT's SLEEP_CONTROL_REG (offset 244), or space 0xff when it has none
// that this guest can write (one byte, memory below 4 GiB or an I/O port).
static struct reg sleep_control(const struct acpi_header* fadt) {
  struct reg r = {0xff, 0};
  if (fadt->length < 256) return r;
  const uint8_t* gas = (const uint8_t*)fadt + 244;
  memcpy(&r.addr, gas + 4, 8);
  int io = gas[0] == 1 && r.addr && r.addr <= 0xffff;
  int mem = gas[0] == 0 && r.addr && mapped(r.addr, 1);
  r.space = io || mem ? gas[0] : 0xff;
  return r;
}

static void reg_write8(struct reg r, uint8_t v) {
  if (r.space == 1) {
    outb((uint16_t)r.addr, v);
  } else {
    *(volatile uint8_t*)r.addr = v;
  }
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

// SLP_TYPa of \_S5: the first element of the package named _S5_ (a
// NameOp 0x08, an optional root prefix 0x5c, "_S5_", a PackageOp 0x12 with a
// one-byte PkgLength, the element count, then Zero/One, a BytePrefix 0x0a
// value or a bare byte), or -1 when the DSDT has none.
static int s5_sleep_type(const struct acpi_header* dsdt) {
  const uint8_t* p = (const uint8_t*)dsdt;
  uint32_t n = dsdt->length;
  for (uint32_t i = 2; i + 10 <= n; i++) {
    int named = p[i - 1] == 0x08 || (p[i - 1] == '\\' && p[i - 2] == 0x08);
    if (!named || memcmp(p + i, "_S5_", 4) || p[i + 4] != 0x12) continue;
    if (p[i + 5] & 0xc0) return -1;  // a PkgLength over 63 bytes: not a sleep package
    const uint8_t* e = p + i + 7;
    if (e[0] == 0x0a) return e[1] & 7;
    return e[0] == 0x01 ? 1 : e[0] <= 7 ? e[0] : -1;
  }
  return -1;
}

int main(void) {
  const struct acpi_header* fadt = acpi_find_table("FACP");
  if (!fadt) fail("no FADT");
  struct reg ctl = sleep_control(fadt);
  if (ctl.space == 0xff) fail("the FADT has no sleep control register");
  const struct acpi_header* dsdt = dsdt_of(fadt);
  if (!dsdt) fail("no DSDT");
  int gsi = ged_gsi(dsdt);
  if (gsi < 0) fail("no Generic Event Device (ACPI0013) with an interrupt in the DSDT");
  int slp_typ = s5_sleep_type(dsdt);
  if (slp_typ < 0) fail("no \\_S5 package in the DSDT");

  lapic_enable();
  set_irq_handler(GED_VECTOR, ged_handler);
  ioapic_route(gsi, GED_VECTOR);
  printf("power_button: waiting (GED gsi %d, sleep control %s %#lx, S5 type %d)\n", gsi,
         ctl.space == 1 ? "port" : "mmio", ctl.addr, slp_typ);
  deadline = rdtsc() + tsc_per_ms() * WAIT_MS;
  run_user(ring3_wait, 0, /*interrupts=*/1);
  if (!presses) fail("no power button press in %u ms", WAIT_MS);
  printf("power_button: pressed, powering off\n");
  reg_write8(ctl, (uint8_t)(slp_typ << 2) | SLP_EN);
  udelay(100000);
  fail("still running 100 ms after writing S5 to the sleep control register");
  return 1;
}
