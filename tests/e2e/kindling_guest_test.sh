#!/usr/bin/env bash
# Boots a test guest under kindling and checks its output against an expect
# file (same format as tests/guests/qemu_test.sh; see expect_lib.sh).
#
# Usage: kindling_guest_test.sh KINDLING GUEST.elf EXPECT [--timeout S]
#                               [-- KINDLING_RUN_ARGS...]
# The guest's debug-exit byte must be kindling's exit status exactly.
# Without a usable /dev/kvm the test prints `SKIP: ...` and passes.
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=../guests/expect_lib.sh
source "$here/../guests/expect_lib.sh"

kindling=$1 elf=$2 expect=$3
shift 3
secs=60
if [[ ${1:-} == --timeout ]]; then secs=$2; shift 2; fi
[[ ${1:-} == -- ]] && shift

if [[ ! -c /dev/kvm ]]; then
  echo "SKIP: /dev/kvm is absent on this host ($(grep -qsE 'vmx|svm' /proc/cpuinfo && echo 'CPU has vmx/svm but no kvm module bound' || echo 'no hardware virtualisation; kvm_pvm does not bind inside a PVM guest'))"
  exit 0
fi
if ! exec 3<>/dev/kvm 2>/dev/null; then
  echo "SKIP: /dev/kvm exists but cannot be opened by $(id -un)"
  exit 0
fi
exec 3>&-

load_expect "$expect"
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/kindling_test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cmd=("$kindling" run --kernel "$elf" "$@")
echo "kindling_test: ${cmd[*]}"
start=$(date +%s%N)
timeout -k 5 "$secs" "${cmd[@]}" </dev/null >"$tmp/log" 2>"$tmp/err"
status=$?
end=$(date +%s%N)
echo "---- serial output ----"
cat "$tmp/log"
echo "---- kindling stderr ----"
cat "$tmp/err"
echo "---- (kindling status $status, $(((end - start) / 1000000)) ms)"

failed=0
fail() { echo "kindling_test: FAILED: $*"; failed=1; }
if [[ $status -eq 124 || $status -eq 137 ]]; then
  fail "timed out after $secs s"
elif [[ $status -ne $want_exit ]]; then
  fail "kindling exit status $status, want $want_exit"
fi
match_lines "$tmp/log"
((failed)) && exit 1
echo "kindling_test: PASSED"
