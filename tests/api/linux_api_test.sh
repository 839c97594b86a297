#!/usr/bin/env bash
# Debian's stock kernel through `kindling serve`: create -> start -> console
# (streamed) -> shutdown (the ACPI power button; the guest's init waits for
# it on /dev/input and powers off) -> STOPPED with exit 0 -> delete, all
# with the CLI. Stock kernels need hardware KVM (kvm_pvm cannot run their
# ring 0), so without it the daemon runs inside tools/nested-kvm.
# Usage: linux_api_test.sh KINDLING KINDLING_CTL INNER_SCRIPT
set -uo pipefail
kindling=$1 ctl=$2 inner=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/linuxapi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! out=$("$root/tools/fetch-kernel.sh" --modules 2>"$tmp/fetch.err"); then
  echo "SKIP: cannot download Debian's cloud kernel: $(tail -n1 "$tmp/fetch.err")"
  [[ ${CI:-} == true ]] && exit 1
  exit 0
fi
kernel=$(sed -n 1p <<<"$out") moddir=$(sed -n 2p <<<"$out")
"$root/tools/make-initramfs.sh" --modules "$moddir" "$tmp/initrd.gz" >/dev/null || exit 1
if grep -qE 'vmx|svm' /proc/cpuinfo && [[ -c /dev/kvm ]]; then
  mkdir "$tmp/w" && cp "$kindling" "$ctl" "$kernel" "$inner" "$tmp/w/" &&
    mv "$tmp/w/$(basename "$kernel")" "$tmp/w/kernel" && cp "$tmp/initrd.gz" "$tmp/w/"
  (cd "$tmp/w" && timeout 200 sh "$(basename "$inner")") 2>&1 | tee "$tmp/log"
else
  echo "linux_api_test: no hardware KVM here: the daemon runs under nested KVM (QEMU/TCG + SVM)"
  timeout -k 5 260 "$root/tools/nested-kvm/run.sh" --outcome "$tmp/outcome" --cpus 2 --mem 2048 \
    --timeout 240 --bin "$kindling" --bin "$ctl" --file "$kernel:kernel" \
    --file "$tmp/initrd.gz:initrd.gz" --file "$inner:inner.sh" -- sh inner.sh \
    </dev/null 2>&1 | tr -d '\r' | tee "$tmp/log"
  outcome=$(cat "$tmp/outcome" 2>/dev/null)
  if [[ $outcome == skip* ]]; then
    echo "SKIP: ${outcome#skip }"
    [[ ${CI:-} == true ]] && exit 1
    exit 0
  fi
  [[ $outcome == "exit 0" ]] || { echo "FAILED: nested run: $outcome"; exit 1; }
fi
fail=0
expect() {
  if grep -qE "$1" "$tmp/log"; then echo "ok   $2"; else echo "FAIL $2"; fail=1; fi
}
expect '^console status 0$' "the console stream ends with the guest, status 0"
expect '^kindling-linux: Linux .* up, 1 cpus' "the stock kernel reached userspace, seen through the console"
expect '^kindling-linux: waiting for the power button' "the guest's button driver and evdev found the ACPI power button"
expect '^shutdown accepted$' "shutdown of the running VM is accepted"
expect '^kindling-linux: power button pressed' "the guest saw the press"
expect '^linux +STOPPED +[0-9]+ +0 \(.*ACPI S5' "get: STOPPED with exit status 0 after the guest powered off (ACPI S5)"
expect '^exits +[1-9]' "metrics: KVM exits counted"
expect '^deleted$' "delete"
exit $fail
