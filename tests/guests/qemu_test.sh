#!/usr/bin/env bash
# Boots a test guest under QEMU (the reference VMM) and checks its output.
#
# Usage: qemu_test.sh [--timeout S] [--machine M] [--memory SIZE]
#                     [--disk-mib N] [--disk-sector N TEXT]...
#                     [--expect-file NAME REGEX]... [--peer COMMAND]
#                     GUEST.elf EXPECT_FILE [-- EXTRA_QEMU_ARGS...]
#
# EXPECT_FILE: one bash extended regex per line, each matched against a
# whole line of the serial output, in order (other lines may come between);
# `# ...` lines are comments; `exit N` sets the guest's expected debug-exit
# code (default 0; QEMU's isa-debug-exit turns it into status (N<<1)|1);
# `poweroff` says the guest powers the machine off instead (QEMU status 0).
# A `FAIL:` line from the guest fails the test unless the file expects it.
#
# Defaults: -M microvm (no option ROMs, RTC, PIT or PIC; ISA serial on),
# -accel tcg -cpu qemu64 -m 128, serial on stdout, isa-debug-exit at 0xf4.
# KINDLING_QEMU_ACCEL=kvm uses KVM where the host has it (this fleet's
# kvm_pvm hosts are not meant for QEMU; TCG is the reference here).
# Without qemu-system-x86_64 the test prints `SKIP: ...` and passes.
#
# Files for devices: `@TMP@` in EXTRA_QEMU_ARGS becomes the test's scratch
# directory (e.g. `-chardev file,id=c0,path=@TMP@/console.txt`).
# --disk-mib N creates @TMP@/disk.img, N MiB of zeros, for a `-drive
# file=@TMP@/disk.img,...`; --disk-sector N TEXT checks afterwards that
# 512-byte sector N of it starts with TEXT (empty TEXT: is all zeros).
# --expect-file NAME REGEX checks that some line of @TMP@/NAME matches
# REGEX (whole line, bash ERE).
# --peer COMMAND runs COMMAND (bash -c, `@TMP@` replaced) in the background
# from just before QEMU starts, under the same timeout; after QEMU exits the
# harness waits for it (10 s at most, then kills it), prints its output and
# fails unless it exits 0 (a host-side peer: a network partner, a QMP
# client, ...). The serial output grows in @TMP@/out while QEMU runs.
set -uo pipefail
# shellcheck source=expect_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/expect_lib.sh"

secs=60
machine="microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on"
memory=128
disk_mib=0
disk_checks=()  # sector, text, sector, text, ...
file_checks=()  # name, regex, ...
peer_cmd=""
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --timeout) secs=$2; shift 2 ;;
    --machine) machine=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --disk-mib) disk_mib=$2; shift 2 ;;
    --disk-sector) disk_checks+=("$2" "$3"); shift 3 ;;
    --expect-file) file_checks+=("$2" "$3"); shift 3 ;;
    --peer) peer_cmd=$2; shift 2 ;;
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

qemu=$(command -v qemu-system-x86_64) || skip_installable "qemu-system-x86_64 not installed"
# Unix socket paths (a --peer's) must stay under 108 bytes: a long
# TEST_TMPDIR gives way to /tmp.
tmpdir=${TEST_TMPDIR:-/tmp}
((${#tmpdir} > 60)) && tmpdir=/tmp
tmp=$(mktemp -d "$tmpdir/qemu_test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ((disk_mib > 0)); then
  truncate -s "${disk_mib}M" "$tmp/disk.img" || exit 2
fi
extra=()
for a in "$@"; do extra+=("${a//@TMP@/$tmp}"); done
set -- "${extra[@]}"

cmd=("$qemu" -M "$machine" -accel "${KINDLING_QEMU_ACCEL:-tcg}" -cpu qemu64
     -m "$memory" -nodefaults -no-user-config -display none -serial stdio
     -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel "$elf" "$@")
echo "qemu_test: ${cmd[*]}"
peer_pid=""
if [[ -n $peer_cmd ]]; then
  peer_cmd=${peer_cmd//@TMP@/$tmp}
  echo "qemu_test: peer: $peer_cmd"
  timeout -k 5 "$secs" bash -c "$peer_cmd" </dev/null >"$tmp/peer.out" 2>&1 &
  peer_pid=$!
fi
start=$(date +%s%N)
timeout -k 5 "$secs" "${cmd[@]}" </dev/null >"$tmp/out" 2>"$tmp/err"
status=$?
end=$(date +%s%N)
peer_status=0
if [[ -n $peer_pid ]]; then
  # The peer gets 10 s after QEMU's exit to finish, then it is killed.
  for ((i = 0; i < 100; i++)); do
    kill -0 "$peer_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$peer_pid" 2>/dev/null && kill "$peer_pid"
  wait "$peer_pid"
  peer_status=$?
fi
tr -d '\r' <"$tmp/out" >"$tmp/log"
echo "---- serial output ----"
cat "$tmp/log"
echo "---- qemu stderr ----"
cat "$tmp/err"
echo "---- (qemu status $status, $(((end - start) / 1000000)) ms)"
if [[ -n $peer_pid ]]; then
  echo "---- peer output ----"
  cat "$tmp/peer.out"
  echo "---- (peer status $peer_status)"
fi

failed=0
fail() { echo "qemu_test: FAILED: $*"; failed=1; }

load_expect "$expect"

if [[ $status -eq 124 || $status -eq 137 ]]; then
  fail "timed out after $secs s"
elif ((want_poweroff)); then
  [[ $status -eq 0 ]] || fail "qemu exit status $status, want 0 (the guest powers off)"
elif [[ $status -ne $(((want_exit << 1) | 1)) ]]; then
  fail "qemu exit status $status, want $(((want_exit << 1) | 1)) (guest exit $want_exit)"
fi

match_lines "$tmp/log"
[[ -n $peer_pid && $peer_status -ne 0 ]] && fail "peer exited with status $peer_status"

for ((i = 0; i < ${#disk_checks[@]}; i += 2)); do
  sector=${disk_checks[i]} text=${disk_checks[i + 1]}
  if [[ -z $text ]]; then  # empty TEXT: all zeros
    got=$(dd if="$tmp/disk.img" bs=512 skip="$sector" count=1 2>/dev/null |
          tr -d '\0' | head -c 40)
  else
    got=$(dd if="$tmp/disk.img" bs=512 skip="$sector" count=1 2>/dev/null |
          head -c "${#text}" | tr -d '\0')
  fi
  [[ $got == "$text" ]] ||
    fail "disk sector $sector starts with '$got', want '$text'"
done
for ((i = 0; i < ${#file_checks[@]}; i += 2)); do
  name=${file_checks[i]} re=${file_checks[i + 1]} found=0
  if [[ -f $tmp/$name ]]; then
    while IFS= read -r line || [[ -n $line ]]; do
      [[ ${line%$'\r'} =~ ^${re}$ ]] && { found=1; break; }
    done <"$tmp/$name"
  fi
  ((found)) || fail "no line of $name matches '$re'"
done
((failed)) && exit 1
echo "qemu_test: PASSED"
