#!/bin/sh
# /init of linux_virtio_test's initramfs (tools/make-initramfs.sh --modules):
# loads the virtio modules, lists what the stock kernel found on the virtio
# bus, and uses each device: the disk (size, sector 0, a write to sector 1),
# /dev/hwrng and /dev/hvc0. Every line the test checks starts with
# `linux-virtio: `; failures say `linux-virtio: FAIL <what>`. Every step is
# bounded by `timeout`; the guest reboots at the end (kindling exits 0).
# Kernel command line: lv.sectors=N (the disk's size in 512-byte sectors),
# lv.devices=N (how many virtio devices to wait for), lv.tag=WORD (written to
# sector 1 as `KINDLING-LINUX-WROTE-<WORD>`).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
say() { echo "linux-virtio: $*"; }
failed=0
fail() { say "FAIL $*"; failed=1; }
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^lv\.$1=//p" | head -n1; }
sectors=$(arg sectors) want=$(arg devices) tag=$(arg tag)
say "$(uname -r) up"

for m in $(cat /lib/modules/order); do
  out=$(timeout 20 insmod /lib/modules/$m.ko 2>&1) || fail "insmod $m: $out"
done

# Drivers bind as the modules load; give the buses a moment all the same.
i=0
while [ "$(ls /sys/bus/virtio/devices 2>/dev/null | wc -l)" -lt "${want:-1}" ] && [ $i -lt 50 ]; do
  sleep 0.1; i=$((i + 1))
done
n=0
for d in /sys/bus/virtio/devices/*; do
  [ -e "$d" ] || continue
  n=$((n + 1))
  drv=none
  [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
  # The parent is the transport: a PCI function or an ACPI platform device.
  say "$(basename "$d") device $(cat "$d/device") driver $drv at $(basename "$(dirname "$(readlink -f "$d")")")"
done
[ "$n" -ge "${want:-1}" ] || fail "$n virtio devices, expected ${want:-1}"

if [ -b /dev/vda ]; then
  size=$(cat /sys/block/vda/size)
  if [ "$size" = "$sectors" ]; then say "vda size $size sectors ok"; else fail "vda size $size, expected $sectors"; fi
  head=$(timeout 10 dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 25)
  if [ "$head" = "KINDLING-DISK-SECTOR-ZERO" ]; then
    say "vda sector 0 ok"
  else
    fail "vda sector 0 reads '$head'"
  fi
  if echo "KINDLING-LINUX-WROTE-$tag" | timeout 10 dd of=/dev/vda bs=512 seek=1 conv=sync,notrunc 2>/dev/null &&
     timeout 10 sync; then
    say "vda sector 1 written"
  else
    fail "vda write"
  fi
else
  fail "no /dev/vda"
fi

if [ -c /dev/hwrng ]; then
  bytes=$(timeout 10 dd if=/dev/hwrng bs=16 count=1 2>/dev/null | od -An -tx1 | wc -w)
  if [ "$bytes" = 16 ]; then
    say "hwrng ok ($(cat /sys/class/misc/hw_random/rng_current 2>/dev/null))"
  else
    fail "hwrng gave $bytes bytes"
  fi
else
  fail "no /dev/hwrng"
fi

if [ -c /dev/hvc0 ]; then
  # Only on the virtio console: the test finds this line only if hvc0 works.
  timeout 10 sh -c 'echo "linux-virtio: hvc0 ok" >/dev/hvc0' || fail "write to /dev/hvc0"
else
  fail "no /dev/hvc0"
fi
sleep 0.2
# How the devices interrupt: IO-APIC lines (mmio) or PCI-MSI vectors (pci).
grep virtio /proc/interrupts | tr -s ' ' | sed 's/^ */linux-virtio: irq /'
if [ $failed = 1 ] || grep -q lv.dmesg /proc/cmdline; then dmesg | grep -iE 'virtio|pci|acpi|LNRO|hwrng|hvc|vda|msi|irq|bar|mem'; fi
say done
reboot -f
