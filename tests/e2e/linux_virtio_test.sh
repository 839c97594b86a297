#!/usr/bin/env bash
# Debian's stock cloud kernel finds and uses kindling's virtio devices over
# both transports: booted with a raw disk, --rng and --console virtio, once
# with --transport mmio (ACPI LNRO0005 devices) and once with --transport
# pci (modern virtio-pci on bus 0), its initramfs (linux_virtio_init.sh)
# loads the kernel package's own virtio modules, lists the virtio devices
# with their drivers, reads the disk's sector 0, writes sector 1, reads
# /dev/hwrng and writes to /dev/hvc0. The host then checks sector 1 of the
# disk file. Where the host has no hardware KVM it runs in tools/nested-kvm,
# and the disk check runs in there too, after kindling exits.
set -uo pipefail
kindling=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
nested=""
if ! grep -qE 'vmx|svm' /proc/cpuinfo || [[ ! -c /dev/kvm ]]; then
  nested=$root/tools/nested-kvm/run.sh
  [[ -x $nested ]] || { echo "SKIP: no hardware virtualisation (vmx/svm) and no tools/nested-kvm"; exit 0; }
  echo "linux_virtio_test: no hardware KVM here: running kindling under nested KVM (QEMU/TCG + SVM)"
fi
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/linux-virtio.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! out=$("$root/tools/fetch-kernel.sh" --modules 2>"$tmp/fetch.err"); then
  echo "SKIP: cannot get Debian's cloud kernel and its modules: $(tail -n1 "$tmp/fetch.err")"
  exit 0
fi
{ read -r kernel; read -r moddir; } <<<"$out"
echo "linux_virtio_test: $(cat "$moddir/package"): modules $(tr '\n' ' ' <"$moddir/order")"
"$root/tools/make-initramfs.sh" --modules "$moddir" "$tmp/initrd.gz" \
  "$root/tests/e2e/linux_virtio_init.sh" >/dev/null || exit 1

sectors=2048  # a 1 MiB raw disk
devices=3     # virtio-blk, virtio-rng, virtio-console
# Runs kindling on one transport, then checks the disk file's sector 1. The
# same script runs here or, under nested KVM, in busybox sh inside L1.
# Arguments: KINDLING KERNEL INITRD DISK TRANSPORT SECTORS DEVICES EXTRA_CMDLINE.
inner='
kindling=$1 kernel=$2 initrd=$3 disk=$4 t=$5
pcioff=" pci=off"
[ "$t" = pci ] && pcioff=""
"$kindling" run --kernel "$kernel" --initrd "$initrd" --memory 256 \
  --transport "$t" --disk "$disk" --rng --console virtio \
  --cmdline "console=ttyS0 reboot=k panic=-1 quiet$pcioff lv.sectors=$6 lv.devices=$7 lv.tag=$t$8"
rc=$?
if dd if="$disk" bs=512 skip=1 count=1 2>/dev/null | grep -q "KINDLING-LINUX-WROTE-$t"; then
  echo "linux-virtio-host: disk sector 1 ok"
else
  echo "linux-virtio-host: disk sector 1 does not hold the guest'"'"'s marker"
fi
exit $rc'

# LINUX_VIRTIO_DMESG=1: the guest prints its kernel's virtio/PCI/ACPI lines.
extra=""
[[ ${LINUX_VIRTIO_DMESG:-0} == 1 ]] && extra=" lv.dmesg"
failed=0
for t in ${LINUX_VIRTIO_TRANSPORTS:-mmio pci}; do
  disk=$tmp/disk-$t.img
  { printf 'KINDLING-DISK-SECTOR-ZERO'; head -c $((sectors * 512 - 25)) /dev/zero; } >"$disk"
  if [[ -n $nested ]]; then
    cmd=("$nested" --mem 2048 --timeout 150 --bin "$kindling"
         --file "$kernel:kernel" --file "$tmp/initrd.gz:initrd.gz" --file "$disk:disk.img" --
         sh -c "$inner" sh ./kindling kernel initrd.gz disk.img "$t" "$sectors" "$devices" "$extra")
  else
    cmd=(sh -c "$inner" sh "$kindling" "$kernel" "$tmp/initrd.gz" "$disk" "$t" "$sectors" "$devices" "$extra")
  fi
  echo "---- --transport $t"
  start=$SECONDS
  timeout -k 5 200 "${cmd[@]}" </dev/null 2>&1 | tr -d '\r' >"$tmp/log"
  status=${PIPESTATUS[0]}
  cat "$tmp/log"
  echo "---- --transport $t: exit $status after $((SECONDS - start)) s"
  if [[ -n $nested && $status -eq 77 ]]; then exit 0; fi
  bad() { echo "FAILED: --transport $t: $*"; failed=1; }
  [[ $status -eq 0 ]] || bad "exit $status"
  for want in "virtio_blk at" "virtio_rng at" "virtio_console at"; do
    grep -qE "^linux-virtio: virtio[0-9]+ device 0x000[234] driver ${want% at} at " "$tmp/log" ||
      bad "no virtio device bound to ${want% at}"
  done
  for want in "vda size $sectors sectors ok" "vda sector 0 ok" "vda sector 1 written" \
              "hwrng ok" "hvc0 ok" "done"; do
    grep -q "^linux-virtio: $want" "$tmp/log" || bad "no 'linux-virtio: $want'"
  done
  grep -q '^linux-virtio: FAIL' "$tmp/log" && bad "$(grep '^linux-virtio: FAIL' "$tmp/log" | head -n3 | tr '\n' ' ')"
  grep -q '^linux-virtio-host: disk sector 1 ok' "$tmp/log" ||
    bad "the guest's write did not reach the disk file"
  # The devices hang off the transport asked for, and interrupt through it
  # (/proc/interrupts lines "N: COUNT CHIP ... NAME", one vCPU): MSI-X
  # vectors on pci, IOAPIC pins on mmio.
  if [[ $t == pci ]]; then
    grep -qE '^linux-virtio: virtio[0-9]+ device .* at 0000:00:' "$tmp/log" || bad "devices not on PCI bus 0"
    grep -qE '^linux-virtio: irq [0-9]+: [1-9][0-9]* PCI-MSI .*virtio[0-9]+-req' "$tmp/log" ||
      bad "no virtio-blk request interrupt through MSI-X"
  else
    grep -qE '^linux-virtio: virtio[0-9]+ device .* at LNRO0005:' "$tmp/log" || bad "devices not LNRO0005 platform devices"
    grep -qE '^linux-virtio: irq [0-9]+: [1-9][0-9]* IO-APIC .*virtio[0-9]+' "$tmp/log" ||
      bad "no virtio interrupt through the IOAPIC"
  fi
done
((failed)) && exit 1
echo "linux_virtio_test: PASSED"
