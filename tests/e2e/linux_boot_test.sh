#!/usr/bin/env bash
# Boots Debian's stock cloud kernel with a busybox initramfs under kindling:
# the guest must print its banner line with the right CPU count and reboot
# cleanly (exit 0). Needs hardware virtualisation (vmx/svm) and /dev/kvm:
# kvm_pvm hosts cannot run a stock kernel's ring-0 code (see
# shared/notes/environment.md), so there the test prints SKIP.
set -uo pipefail
kindling=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
if ! grep -qE 'vmx|svm' /proc/cpuinfo; then
  echo "SKIP: no hardware virtualisation (vmx/svm) on this host: a stock Linux kernel cannot boot here"
  exit 0
fi
if [[ ! -c /dev/kvm ]]; then
  echo "SKIP: the CPU has vmx/svm but /dev/kvm is absent (load kvm_intel or kvm_amd)"
  exit 0
fi
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/linux.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
kernel=$("$root/tools/fetch-kernel.sh") || { echo "FAILED: cannot fetch the Debian kernel"; exit 1; }
"$root/tools/make-initramfs.sh" "$tmp/initrd.gz" >/dev/null || exit 1
for cpus in 1 2; do
  timeout -k 5 120 "$kindling" run --kernel "$kernel" --initrd "$tmp/initrd.gz" \
    --cpus "$cpus" --memory 256 \
    --cmdline "console=ttyS0 reboot=k panic=-1 quiet" </dev/null >"$tmp/log" 2>&1
  status=$?
  cat "$tmp/log"
  if [[ $status -ne 0 ]]; then echo "FAILED: $cpus cpus: exit $status"; exit 1; fi
  grep -qE "^kindling-linux: Linux .* up, $cpus cpus" "$tmp/log" ||
    { echo "FAILED: $cpus cpus: no banner with $cpus cpus"; exit 1; }
done
echo "linux_boot_test: PASSED"
