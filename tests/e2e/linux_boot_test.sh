#!/usr/bin/env bash
# Boots Debian's stock kernels with a busybox initramfs under kindling: the
# cloud bzImage, and the generic ELF vmlinux through PVH and through the
# 64-bit boot protocol. Each guest must print its banner from userspace
# with the right CPU count and reboot cleanly (exit 0). Where the host has
# no hardware KVM (kvm_pvm hosts cannot run a stock kernel's ring 0, and
# this project's CI machines have no /dev/kvm) it runs in tools/nested-kvm.
set -uo pipefail
kindling=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
nested=""
if ! grep -qE 'vmx|svm' /proc/cpuinfo || [[ ! -c /dev/kvm ]]; then
  # No hardware KVM here: boot it with kindling inside a QEMU/TCG guest that
  # emulates SVM (tools/nested-kvm), where a stock kernel's ring 0 runs.
  nested=$root/tools/nested-kvm/run.sh
  [[ -x $nested ]] || { echo "SKIP: no hardware virtualisation (vmx/svm) and no tools/nested-kvm"; exit 0; }
  echo "linux_boot_test: no hardware KVM here: running kindling under nested KVM (QEMU/TCG + SVM)"
fi
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/linux.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! kernel=$("$root/tools/fetch-kernel.sh" 2>"$tmp/fetch.err"); then
  echo "SKIP: cannot download Debian's cloud kernel: $(tail -n1 "$tmp/fetch.err")"
  exit 0
fi
"$root/tools/make-initramfs.sh" "$tmp/initrd.gz" >/dev/null || exit 1
# Debian's ELF vmlinux (the generic flavour's, unpacked by tools/nested-kvm)
# boots through PVH and through the 64-bit boot protocol.
vmlinux=""
if kdir=$("$root/tools/nested-kvm/run.sh" --print-kernel-dir 2>/dev/null) &&
   [[ -f $kdir/vmlinux ]]; then
  vmlinux=$kdir/vmlinux
else
  echo "linux_boot_test: no vmlinux (tools/nested-kvm could not fetch one): bzImage cases only"
fi

# kernel:protocol:cpus:irqchip:end. The bzImage with 1 and 2 vCPUs on the
# default irqchip (split: the userspace IOAPIC delivers the UART's IRQ 4 as
# an MSI, no PIC, no PIT) and 2 on the full in-kernel one (--irqchip full);
# the vmlinux through PVH (default irqchip) and the 64-bit protocol (full).
# The guest ends by rebooting (i8042) or by powering off (ACPI S5).
variants=(bzimage:linux:1:default:reboot bzimage:linux:2:default:poweroff
          bzimage:linux:2:full:poweroff)
[[ -n $vmlinux ]] && variants+=(vmlinux:pvh:2:default:reboot vmlinux:linux:1:full:reboot)
for variant in "${variants[@]}"; do
  IFS=: read -r which protocol cpus irqchip end <<<"$variant"
  image=$kernel
  [[ $which == vmlinux ]] && image=$vmlinux
  irq_opts=()
  [[ $irqchip != default ]] && irq_opts=(--irqchip "$irqchip")
  opts=(--initrd initrd.gz --cpus "$cpus" --memory 256 "${irq_opts[@]}"
        --boot-protocol "$protocol" --cmdline "console=ttyS0 reboot=k panic=-1 pci=off loglevel=7 kindling.$end")
  if [[ -n $nested ]]; then
    # L1 gets as many vCPUs as L2. Two-vCPU boots with `quiet` hung
    # before init in about 1 of 6 here (2026-12-04; with 1 or 2 L1
    # vCPUs), none of 6 with loglevel=7, which also leaves the console
    # showing where a hang stopped. Not explained yet (issue 9's notes).
    cmd=("$nested" --outcome "$tmp/outcome" --cpus "$cpus" --mem 2048 --timeout 120 --bin "$kindling"
         --file "$image:kernel" --file "$tmp/initrd.gz:initrd.gz" --
         ./kindling run --kernel kernel "${opts[@]}")
  else
    cmd=("$kindling" run --kernel "$image" "${opts[@]/initrd.gz/$tmp/initrd.gz}")
  fi
  echo "---- $variant"
  # Streamed as it comes (tee), so a hang shows where the guest stopped.
  timeout -k 5 150 "${cmd[@]}" </dev/null 2>&1 | tr -d '\r' | tee "$tmp/log"
  status=${PIPESTATUS[0]}
  if [[ -n $nested ]] && [[ $(cat "$tmp/outcome" 2>/dev/null) == skip* ]]; then exit 0; fi
  if [[ $status -ne 0 ]]; then echo "FAILED: $variant: exit $status"; exit 1; fi
  grep -qE "^kindling-linux: Linux .* up, $cpus cpus" "$tmp/log" ||
    { echo "FAILED: $variant: no banner from userspace with $cpus cpus"; exit 1; }
  # Linux powers off only when it found a way (the FADT's sleep control
  # register and \_S5): otherwise it prints "System halted" and halts.
  if [[ $end == poweroff ]] && ! grep -q "reboot: Power down" "$tmp/log"; then
    echo "FAILED: $variant: the guest did not power off (ACPI S5)"; exit 1
  fi
done
echo "linux_boot_test: PASSED"
