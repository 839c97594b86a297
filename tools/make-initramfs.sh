#!/usr/bin/env bash
# Builds a tiny busybox initramfs (gzip'd cpio) for booting stock Linux.
#
# Usage: tools/make-initramfs.sh [--modules DIR] [--bin PATH]... OUT.cpio.gz [INIT_SCRIPT]
# --modules DIR  copies DIR/*.ko and DIR/order (module names, dependencies
#                first; what `tools/fetch-kernel.sh --modules` prints) to
#                /lib/modules/ for an INIT_SCRIPT to insmod in that order.
# --bin PATH     copies a (static) program to /bin/.
# The default /init mounts /proc and /sys, prints the kernel version and
# the CPUs it found, runs /bin/sh on the console if one is attached, and
# reboots (kindling exits 0 on the guest's reboot), or powers off with
# `kindling.poweroff` on the kernel command line, or waits for the ACPI
# power button and then powers off with `kindling.powerbutton` (needs
# --modules with button and evdev). Needs busybox-static
# and cpio (tools/setup.sh installs them).
set -euo pipefail
moddir="" bins=()
while [[ ${1:-} == --* ]]; do
  case $1 in
    --modules) moddir=${2:?--modules DIR}; shift 2 ;;
    --bin) bins+=("${2:?--bin PATH}"); shift 2 ;;
    *) echo "make-initramfs: unknown option $1" >&2; exit 2 ;;
  esac
done
out=${1:?usage: make-initramfs.sh [--modules DIR] [--bin PATH]... OUT.cpio.gz [INIT_SCRIPT]}
init=${2:-}
busybox=$(command -v busybox || true)
if [[ -z $busybox ]] || ! file "$busybox" 2>/dev/null | grep -q static; then
  busybox=/bin/busybox
fi
[[ -x $busybox ]] || { echo "make-initramfs: busybox-static is not installed" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,etc}
cp "$busybox" "$root/bin/busybox"
for app in sh mount echo cat grep wc uname reboot poweroff sleep ls dmesg \
           insmod lsmod dd od timeout sync readlink basename head tr cut ip ping sed; do
  ln -s busybox "$root/bin/$app"
done
for b in "${bins[@]}"; do cp "$b" "$root/bin/" && chmod 755 "$root/bin/$(basename "$b")"; done
if [[ -n $moddir ]]; then
  [[ -f $moddir/order ]] || { echo "make-initramfs: $moddir has no 'order' file" >&2; exit 1; }
  mkdir -p "$root/lib/modules"
  cp "$moddir/order" "$root/lib/modules/order"
  while read -r m; do
    [[ -n $m ]] || continue
    cp "$moddir/$m.ko" "$root/lib/modules/$m.ko"
  done <"$moddir/order"
fi
if [[ -n $init ]]; then
  cp "$init" "$root/init"
else
  cat >"$root/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "kindling-linux: $(uname -sr) up, $(grep -c ^processor /proc/cpuinfo) cpus, $(grep MemTotal /proc/meminfo)"
if grep -q kindling.shell /proc/cmdline; then
  echo "kindling-linux: starting a shell (exit to reboot)"
  setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'
fi
if grep -q kindling.powerbutton /proc/cmdline; then
  # The ACPI power button (--modules with button and evdev): wait for a
  # press, then power off, as acpid or systemd-logind would.
  for m in $(cat /lib/modules/order 2>/dev/null); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
  dev="" i=0
  while [ -z "$dev" ] && [ $i -lt 100 ]; do
    for e in /sys/class/input/event*; do
      grep -q "Power Button" "$e/device/name" 2>/dev/null && dev=/dev/input/${e##*/}
    done
    [ -z "$dev" ] && sleep 0.1
    i=$((i + 1))
  done
  if [ -n "$dev" ]; then
    echo "kindling-linux: waiting for the power button ($dev)"
    if dd if="$dev" bs=24 count=1 of=/dev/null 2>/dev/null; then
      echo "kindling-linux: power button pressed, powering off"
      poweroff -f
    fi
    echo "kindling-linux: cannot read $dev"
  fi
  echo "kindling-linux: no power button input device"
fi
if grep -q kindling.poweroff /proc/cmdline; then
  echo "kindling-linux: ok, powering off"
  poweroff -f  # ACPI S5 through the FADT's sleep control register
fi
echo "kindling-linux: ok, rebooting"
reboot -f
INIT
fi
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) >"$out"
echo "make-initramfs: wrote $out ($(stat -c %s "$out") bytes)"
