#!/usr/bin/env bash
# Boots Debian's stock cloud kernel with a busybox initramfs under kindling:
# the guest must print its banner line with the right CPU count and reboot
# cleanly (exit 0). Needs hardware virtualisation (vmx/svm) and /dev/kvm:
# kvm_pvm hosts cannot run a stock kernel's ring-0 code (see
# shared/notes/environment.md), so there the test prints SKIP.
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
# 1 and 2 vCPUs with the full in-kernel irqchip, and 2 with the split one
# (userspace IOAPIC delivering the UART's IRQ 4 as an MSI).
for variant in 1:full 2:full 2:split; do
  cpus=${variant%:*} irqchip=${variant#*:}
  run=(run --kernel "$kernel" --initrd "$tmp/initrd.gz" --cpus "$cpus" --memory 256
       --irqchip "$irqchip" --cmdline "console=ttyS0 reboot=k panic=-1 pci=off quiet")
  if [[ -n $nested ]]; then
    cmd=("$nested" --mem 1536 --timeout 300 --bin "$kindling"
         --file "$kernel:vmlinuz" --file "$tmp/initrd.gz:initrd.gz" --
         ./kindling run --kernel vmlinuz --initrd initrd.gz --cpus "$cpus" --memory 256
         --irqchip "$irqchip" --cmdline "console=ttyS0 reboot=k panic=-1 pci=off quiet")
  else
    cmd=("$kindling" "${run[@]}")
  fi
  timeout -k 5 400 "${cmd[@]}" </dev/null 2>&1 | tr -d '\r' >"$tmp/log"
  status=${PIPESTATUS[0]}
  cat "$tmp/log"
  if [[ -n $nested && $status -eq 77 ]]; then exit 0; fi
  if [[ $status -ne 0 ]]; then echo "FAILED: $variant: exit $status"; exit 1; fi
  grep -qE "^kindling-linux: Linux .* up, $cpus cpus" "$tmp/log" ||
    { echo "FAILED: $variant: no banner from userspace with $cpus cpus"; exit 1; }
done
echo "linux_boot_test: PASSED"
