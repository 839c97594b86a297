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

# Where this host has no usable /dev/kvm, run kindling inside a QEMU/TCG
# guest that has one (tools/nested-kvm: TCG emulates AMD SVM).
nested=""
pvm_host=0
[[ -d /sys/module/kvm_pvm && ${KINDLING_TEST_NO_PVM:-0} == 1 ]] && pvm_host=1
if ((pvm_host)) || [[ ! -c /dev/kvm ]] || ! { exec 3<>/dev/kvm; } 2>/dev/null; then
  nested=$here/../../tools/nested-kvm/run.sh
  if [[ ! -x $nested ]]; then
    echo "SKIP: no usable /dev/kvm here and tools/nested-kvm is not in this test's data"
    exit 0
  fi
  if ((pvm_host)); then
    echo "kindling_test: this host's /dev/kvm is kvm_pvm, which does not do PV-EOI: running kindling under nested KVM (QEMU/TCG + SVM)"
  else
    echo "kindling_test: no usable /dev/kvm on this host: running kindling under nested KVM (QEMU/TCG + SVM)"
  fi
fi
exec 3>&- 2>/dev/null

load_expect "$expect"
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/kindling_test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cmd=("$kindling" run --kernel "$elf" "$@")
if [[ -n $nested ]]; then
  # Files named on the command line travel into the nested guest's /work.
  ncmd=(./kindling run --kernel "$(basename "$elf")")
  nfiles=(--file "$elf:$(basename "$elf")")
  for a in "$@"; do
    if [[ -f $a ]]; then
      nfiles+=(--file "$a:$(basename "$a")")
      ncmd+=("$(basename "$a")")
    else
      ncmd+=("$a")
    fi
  done
  cmd=("$nested" --outcome "$tmp/outcome" --mem "${NESTED_MEM:-1024}" --timeout "$((secs + 120))"
       --bin "$kindling" "${nfiles[@]}" -- "${ncmd[@]}")
fi
echo "kindling_test: ${cmd[*]}"
start=$(date +%s%N)
timeout -k 5 "$((secs + 180))" "${cmd[@]}" </dev/null >"$tmp/raw" 2>"$tmp/err"
status=$?
tr -d '\r' <"$tmp/raw" >"$tmp/log"  # a nested guest's console ends lines with CRLF
if [[ -n $nested ]] && [[ $(cat "$tmp/outcome" 2>/dev/null) == skip* ]]; then
  grep -m1 '^SKIP:' "$tmp/err" "$tmp/log" -h || echo "SKIP: nested KVM unavailable"
  exit 0
fi
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
