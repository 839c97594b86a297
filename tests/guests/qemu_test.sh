#!/usr/bin/env bash
# Boots a test guest under QEMU (the reference VMM) and checks its output.
#
# Usage: qemu_test.sh [--timeout S] [--machine M] [--memory SIZE]
#                     GUEST.elf EXPECT_FILE [-- EXTRA_QEMU_ARGS...]
#
# EXPECT_FILE: one bash extended regex per line, each matched against a
# whole line of the serial output, in order (other lines may come between);
# `# ...` lines are comments; `exit N` sets the guest's expected debug-exit
# code (default 0; QEMU's isa-debug-exit turns it into status (N<<1)|1).
# A `FAIL:` line from the guest fails the test unless the file expects it.
#
# Defaults: -M microvm (no option ROMs, RTC, PIT or PIC; ISA serial on),
# -accel tcg -cpu qemu64 -m 128, serial on stdout, isa-debug-exit at 0xf4.
# KINDLING_QEMU_ACCEL=kvm uses KVM where the host has it (this fleet's
# kvm_pvm hosts are not meant for QEMU; TCG is the reference here).
# Without qemu-system-x86_64 the test prints `SKIP: ...` and passes.
set -uo pipefail
# shellcheck source=expect_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/expect_lib.sh"

secs=60
machine="microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on"
memory=128
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --timeout) secs=$2; shift 2 ;;
    --machine) machine=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    *) echo "qemu_test: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ $# -lt 2 ]]; then
  echo "usage: qemu_test.sh [opts] GUEST.elf EXPECT_FILE [-- QEMU_ARGS...]" >&2
  exit 2
fi
elf=$1 expect=$2
shift 2
[[ ${1:-} == -- ]] && shift

qemu=$(command -v qemu-system-x86_64) || {
  echo "SKIP: qemu-system-x86_64 not installed"
  exit 0
}
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/qemu_test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

cmd=("$qemu" -M "$machine" -accel "${KINDLING_QEMU_ACCEL:-tcg}" -cpu qemu64
     -m "$memory" -nodefaults -no-user-config -display none -serial stdio
     -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel "$elf" "$@")
echo "qemu_test: ${cmd[*]}"
start=$(date +%s%N)
timeout -k 5 "$secs" "${cmd[@]}" </dev/null >"$tmp/out" 2>"$tmp/err"
status=$?
end=$(date +%s%N)
tr -d '\r' <"$tmp/out" >"$tmp/log"
echo "---- serial output ----"
cat "$tmp/log"
echo "---- qemu stderr ----"
cat "$tmp/err"
echo "---- (qemu status $status, $(((end - start) / 1000000)) ms)"

failed=0
fail() { echo "qemu_test: FAILED: $*"; failed=1; }

load_expect "$expect"

if [[ $status -eq 124 || $status -eq 137 ]]; then
  fail "timed out after $secs s"
elif [[ $status -ne $(((want_exit << 1) | 1)) ]]; then
  fail "qemu exit status $status, want $(((want_exit << 1) | 1)) (guest exit $want_exit)"
fi

match_lines "$tmp/log"
((failed)) && exit 1
echo "qemu_test: PASSED"
