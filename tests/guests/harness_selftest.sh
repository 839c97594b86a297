#!/usr/bin/env bash
# Checks that qemu_test.sh fails when it should: wrong line, wrong order,
# wrong exit status, an unexpected FAIL line, a hang. And passes when right.
# Usage: harness_selftest.sh QEMU_TEST_SH HELLO_ELF
set -uo pipefail
harness=$1 elf=$2
command -v qemu-system-x86_64 >/dev/null || {
  [[ ${CI:-} == true ]] && { echo "FAILED: qemu-system-x86_64 not installed (CI=true)"; exit 1; }
  echo "SKIP: qemu-system-x86_64 not installed"
  exit 0
}
dir=$(mktemp -d "${TEST_TMPDIR:-/tmp}/selftest.XXXXXX")
trap 'rm -rf "$dir"' EXIT
bad=0
check() {  # check WANT_RC NAME EXPECT_TEXT [extra qemu args...]
  local want=$1 name=$2 text=$3
  shift 3
  printf '%s\n' "$text" >"$dir/$name.expect"
  "$harness" --timeout 5 "$elf" "$dir/$name.expect" -- -append "x=1" "$@" \
    >"$dir/$name.log" 2>&1
  local rc=$?
  if [[ $rc -ne $want ]]; then
    echo "selftest $name: harness exited $rc, want $want"
    cat "$dir/$name.log"
    bad=1
  else
    echo "selftest $name: ok (harness exited $rc)"
  fi
}
check 0 right $'kindling hello guest\ncmdline: x=1\nhello: ok'
check 1 wrong_line $'kindling hello guest\ncmdline: y=2'
check 1 wrong_order $'hello: ok\nkindling hello guest'
check 1 wrong_exit $'exit 3\nhello: ok'
check 1 partial_line $'hello: o'
check 1 hang 'hello: ok' -S  # -S: the vCPU never starts
exit $bad
