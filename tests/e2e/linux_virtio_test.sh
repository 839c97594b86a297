#!/usr/bin/env bash
# Debian's stock cloud kernel finds and uses every kindling virtio device
# over both transports and on both virtqueue layouts: booted with a raw
# disk, --rng, --console virtio, --net on a TAP, --vsock (Unix sockets) and
# --balloon, once with --transport mmio (ACPI LNRO0005 devices), once with
# --transport pci (modern virtio-pci on bus 0), and once more on pci with
# --virtqueue packed (every device must then run packed), its initramfs (linux_virtio_init.sh) loads
# the kernel package's own virtio modules, lists the virtio devices with
# their drivers, reads the disk's sector 0, writes sector 1, reads
# /dev/hwrng, writes to /dev/hvc0, pings the host's end of the TAP, answers
# a host vsock connection and makes one to the host (linux_vsock), and sees
# MemTotal drop by the balloon's target. linux_virtio_run.sh is the host
# side of one boot, and checks the disk file's sector 1 afterwards. Where
# the host has no hardware KVM it all runs in tools/nested-kvm; on a host
# with KVM, in a network namespace of its own (for the TAP's 10.0.2.2).
#
#   linux_virtio_test.sh KINDLING LINUX_VSOCK UDS_VSOCK_PEER
set -uo pipefail
kindling=$1 linux_vsock=$2 peer=$3
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
"$root/tools/make-initramfs.sh" --modules "$moddir" --bin "$linux_vsock" "$tmp/initrd.gz" \
  "$root/tests/e2e/linux_virtio_init.sh" >/dev/null || exit 1
run=$root/tests/e2e/linux_virtio_run.sh

sectors=2048  # a 1 MiB raw disk
devices=6     # virtio-blk, -rng, -console, -net, -vsock, -balloon
mac=52:54:00:4b:4e:01
balloon_mib=16

# LINUX_VIRTIO_DMESG=1: the guest prints its kernel's virtio/PCI/ACPI lines.
extra=" lv.sectors=$sectors lv.devices=$devices"
[[ ${LINUX_VIRTIO_DMESG:-0} == 1 ]] && extra+=" lv.dmesg"
failed=0
for t in ${LINUX_VIRTIO_TRANSPORTS:-mmio pci pci-packed}; do
  disk=$tmp/disk-$t.img
  { printf 'KINDLING-DISK-SECTOR-ZERO'; head -c $((sectors * 512 - 25)) /dev/zero; } >"$disk"
  if [[ -n $nested ]]; then
    cmd=("$nested" --outcome "$tmp/outcome" --mem 2048 --timeout 150 --module tun --bin "$kindling" --bin "$peer"
         --file "$run:run.sh" --file "$kernel:kernel" --file "$tmp/initrd.gz:initrd.gz"
         --file "$disk:disk.img" -- sh run.sh ./kindling kernel initrd.gz disk.img "$t"
         ./uds_vsock_peer . "$mac" "$balloon_mib" "$extra")
  else
    netns=()
    unshare -n true 2>/dev/null && netns=(unshare -n)
    cmd=("${netns[@]}" sh "$run" "$kindling" "$kernel" "$tmp/initrd.gz" "$disk" "$t"
         "$(realpath "$peer")" "$tmp" "$mac" "$balloon_mib" "$extra")
  fi
  echo "---- --transport $t"
  start=$SECONDS
  timeout -k 5 200 "${cmd[@]}" </dev/null 2>&1 | tr -d '\r' >"$tmp/log"
  status=${PIPESTATUS[0]}
  cat "$tmp/log"
  echo "---- --transport $t: exit $status after $((SECONDS - start)) s"
  if [[ -n $nested ]] && [[ $(cat "$tmp/outcome" 2>/dev/null) == skip* ]]; then exit 0; fi
  bad() { echo "FAILED: --transport $t: $*"; failed=1; }
  [[ $status -eq 0 ]] || bad "exit $status"
  for want in "0x0002 virtio_blk" "0x0004 virtio_rng" "0x0003 virtio_console" "0x0001 virtio_net" \
              "0x0013 vmw_vsock_virtio_transport" "0x0005 virtio_balloon"; do
    grep -qE "^linux-virtio: virtio[0-9]+ device ${want% *} driver ${want#* } at " "$tmp/log" ||
      bad "no virtio device ${want% *} bound to ${want#* }"
  done
  for want in "vda size $sectors sectors ok" "vda sector 0 ok" "vda sector 1 written" \
              "hwrng ok" "hvc0 ok" "net [a-z0-9]+ $mac ping ok" "vsock served the host on port 1234" \
              "vsock host port 1235 echoed our line" "balloon ok" "done"; do
    grep -qE "^linux-virtio: $want" "$tmp/log" || bad "no 'linux-virtio: $want'"
  done
  grep -q '^uds-peer: guest port 1234 echoed our line' "$tmp/log" ||
    bad "the host's vsock connection to the guest got no echo"
  grep -q '^uds-peer: echoed [0-9]* bytes from the guest' "$tmp/log" ||
    bad "the guest's vsock connection did not reach the host"
  grep -q '^linux-virtio: FAIL' "$tmp/log" && bad "$(grep '^linux-virtio: FAIL' "$tmp/log" | head -n3 | tr '\n' ' ')"
  grep -q '^linux-virtio-host: disk sector 1 ok' "$tmp/log" ||
    bad "the guest's write did not reach the disk file"
  # The devices hang off the transport asked for, and interrupt through it
  # (/proc/interrupts lines "N: COUNT CHIP ... NAME", one vCPU): MSI-X
  # vectors on pci, IOAPIC pins on mmio.
  # -packed: every device runs on packed virtqueues (Linux takes them when
  # offered); otherwise on split ones.
  want_ring=split
  [[ $t == *-packed ]] && want_ring=packed
  if grep -E '^linux-virtio: virtio[0-9]+ device ' "$tmp/log" | grep -qv " ring $want_ring\$"; then
    bad "a device not on $want_ring virtqueues: $(grep -E '^linux-virtio: virtio[0-9]+ device ' "$tmp/log" | grep -v " ring $want_ring\$" | head -n1)"
  fi
  if [[ $t == pci* ]]; then
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
