#!/bin/sh
# /init of linux_virtio_test's initramfs (tools/make-initramfs.sh --modules):
# loads the virtio modules, lists what the stock kernel found on the virtio
# bus, and uses each device: the disk (size, sector 0, a write to sector 1),
# /dev/hwrng, /dev/hvc0, the NIC (pings the host's end of the TAP), vsock
# (a host connection to port 1234, a connection to host port 1235; through
# /bin/linux_vsock) and the balloon (MemTotal drops by its target). Every line the test checks starts with
# `linux-virtio: `; failures say `linux-virtio: FAIL <what>`. Every step is
# bounded by `timeout`; the guest reboots at the end (kindling exits 0).
# Kernel command line: lv.sectors=N (the disk's size in 512-byte sectors),
# lv.devices=N (how many virtio devices to wait for), lv.tag=WORD (written to
# sector 1 as `KINDLING-LINUX-WROTE-<WORD>`), lv.mac=MAC (the NIC's),
# lv.balloon_mib=N (the balloon's target).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
say() { echo "linux-virtio: $*"; }
failed=0
fail() { say "FAIL $*"; failed=1; }
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^lv\.$1=//p" | head -n1; }
sectors=$(arg sectors) want=$(arg devices) tag=$(arg tag) mac=$(arg mac) balloon=$(arg balloon_mib)
say "$(uname -r) up"
memtotal() { sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo; }
mem_before=$(memtotal)  # before virtio_balloon loads and inflates

for m in $(cat /lib/modules/order); do
  out=$(timeout 20 insmod /lib/modules/$m.ko 2>&1) || fail "insmod $m: $out"
done

# The host connects to our vsock port 1234 as soon as it can: listen early.
serve_pid=""
[ -c /dev/vsock ] && { timeout 120 linux_vsock serve 1234 & serve_pid=$!; }

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
  # Feature bit 34 (VIRTIO_F_RING_PACKED) is the 35th character.
  ring=split
  [ "$(cut -c35 "$d/features" 2>/dev/null)" = 1 ] && ring=packed
  say "$(basename "$d") device $(cat "$d/device") driver $drv at $(basename "$(dirname "$(readlink -f "$d")")") ring $ring"
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
# virtio-net: the NIC with our MAC pings the host's end of the TAP.
nic=""
for i in /sys/class/net/*; do
  [ "$(cat "$i/address" 2>/dev/null)" = "$mac" ] && nic=$(basename "$i")
done
if [ -n "$nic" ]; then
  ip link set "$nic" up && ip addr add 10.0.2.15/24 dev "$nic"
  i=0 pinged=0
  while [ $i -lt 20 ] && [ $pinged = 0 ]; do
    timeout 5 ping -c 1 -W 2 10.0.2.2 >/dev/null 2>&1 && pinged=1
    i=$((i + 1))
  done
  if [ $pinged = 1 ]; then say "net $nic $mac ping ok"; else fail "net: $nic cannot ping 10.0.2.2"; fi
else
  fail "no network interface with MAC $mac"
fi

# virtio-vsock: the host connects to our port 1234; we connect to its 1235.
if [ -n "$serve_pid" ]; then
  timeout 40 linux_vsock connect 1235
  wait $serve_pid
else
  fail "no /dev/vsock"
fi

# virtio-balloon: inflating to the target takes that much from MemTotal.
if [ -n "$balloon" ]; then
  i=0 mem_now=$(memtotal)
  while [ $((mem_before - mem_now)) -lt $((balloon * 1024 * 9 / 10)) ] && [ $i -lt 100 ]; do
    sleep 0.1; i=$((i + 1)); mem_now=$(memtotal)
  done
  if [ $((mem_before - mem_now)) -ge $((balloon * 1024 * 9 / 10)) ]; then
    say "balloon ok: MemTotal $mem_before -> $mem_now kB"
  else
    fail "balloon: MemTotal $mem_before -> $mem_now kB, target $balloon MiB"
  fi
fi
sleep 0.2
# How the devices interrupt: IO-APIC lines (mmio) or PCI-MSI vectors (pci).
grep virtio /proc/interrupts | tr -s ' ' | sed 's/^ */linux-virtio: irq /'
if [ $failed = 1 ] || grep -q lv.dmesg /proc/cmdline; then dmesg | grep -iE 'virtio|pci|acpi|LNRO|hwrng|hvc|vda|msi|irq|bar|mem'; fi
say done
reboot -f
