#!/usr/bin/env bash
# Runs a test program that needs /dev/kvm inside tools/nested-kvm when this
# host has no usable /dev/kvm (where it has one, the program's own target
# runs it directly and this one prints SKIP).
#
# Usage: nested_test.sh PROGRAM [--file SRC:NAME]... [--env K=V]... [--mem MIB]
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
prog=$1
shift
if [[ -c /dev/kvm ]] && { exec 3<>/dev/kvm; } 2>/dev/null; then
  echo "SKIP: this host has /dev/kvm; $(basename "$prog") runs directly in its own target"
  exit 0
fi
mem=1024
args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --mem) mem=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
echo "nested_test: no usable /dev/kvm: running $(basename "$prog") under nested KVM"
outcome=${TEST_TMPDIR:-/tmp}/nested.outcome
rm -f "$outcome"
"$here/../../tools/nested-kvm/run.sh" --outcome "$outcome" --mem "$mem" --timeout 600 --bin "$prog" \
  "${args[@]}" -- "./$(basename "$prog")" >"${TEST_TMPDIR:-/tmp}/nested.out" 2>&1
status=$?
tr -d '\r' <"${TEST_TMPDIR:-/tmp}/nested.out"
[[ $(cat "$outcome" 2>/dev/null) == skip* ]] && exit 0  # the harness printed SKIP: why
exit $status
