#!/usr/bin/env bash
# The virtio devices under kindling, driven by the test guests whose
# drivers tests/guests/*_qemu_test check against QEMU's devices: virtio-blk
# (bytes in the file, read-only disks, full and split irqchip, a flush that
# survives kill -9), virtio-rng and virtio-console, and the hostile guest
# (every malformed ring ends in DEVICE_NEEDS_RESET, the VMM and the other
# device keep going), virtio-net over a TAP, virtio-vsock both ways through
# Unix sockets, the balloon lowering kindling's RSS — over virtio-mmio and
# virtio-pci. Runs kindling directly where /dev/kvm works, else in
# tools/nested-kvm.
#
# Usage: virtio_test.sh KINDLING CASES_SH EXPECT_DIR GUEST.elf...
# KINDLING_FORCE_NESTED=1 uses tools/nested-kvm even where /dev/kvm works.
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=../guests/expect_lib.sh
source "$here/../guests/expect_lib.sh"
kindling=$1 cases=$2 expect_dir=$3
shift 3
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/virtio.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [[ ${KINDLING_FORCE_NESTED:-0} != 1 && -c /dev/kvm ]] && { exec 3<>/dev/kvm; } 2>/dev/null; then
  exec 3>&-
  cp "$kindling" "$tmp/kindling"
  cp "$cases" "$tmp/cases.sh"
  for g in "$@"; do cp "$g" "$tmp/"; done
  (cd "$tmp" && sh cases.sh) >"$tmp/raw" 2>&1
else
  echo "virtio_test: no usable /dev/kvm: running under nested KVM"
  files=(--file "$cases:cases.sh")
  for g in "$@"; do files+=(--file "$g:$(basename "$g")"); done
  "$here/../../tools/nested-kvm/run.sh" --outcome "$tmp/outcome" --mem 1024 --timeout 400 --module tun --bin "$kindling" \
    "${files[@]}" -- sh cases.sh >"$tmp/raw" 2>&1
  [[ $(cat "$tmp/outcome" 2>/dev/null) == skip* ]] &&
    { grep -m1 '^SKIP:' "$tmp/raw" || echo "SKIP: nested KVM unavailable"; exit 0; }
fi
tr -d '\r' <"$tmp/raw" >"$tmp/log"  # the guests end serial lines with CRLF
cat "$tmp/log"

failed=0
fail() { echo "virtio_test: FAILED: $*"; failed=1; }
grep '^check: FAIL' "$tmp/log" | while read -r line; do echo "virtio_test: FAILED: $line"; done
grep -q '^check: FAIL' "$tmp/log" && failed=1
for exp in "$expect_dir"/virtio_*.expect; do
  name=$(basename "$exp" .expect)
  name=${name#virtio_}
  # The end marker is found anywhere in a line: a killed VMM leaves the
  # guest's last line unfinished (the cases print a newline first anyway).
  sed -n "/^=== begin $name\$/,/=== end $name status/p" "$tmp/log" >"$tmp/$name.log"
  if ! grep -q "=== end $name status" "$tmp/$name.log"; then
    fail "case $name did not run to the end"
    continue
  fi
  status=$(sed -n "s/.*=== end $name status \([0-9]*\)\$/\1/p" "$tmp/$name.log")
  load_expect "$exp"
  [[ $status == "$want_exit" ]] || fail "case $name: kindling exit status $status, want $want_exit"
  before=$failed
  failed=0
  match_lines "$tmp/$name.log"
  ((failed)) && echo "virtio_test: (in case $name)"
  ((failed |= before))
done
((failed)) && exit 1
echo "virtio_test: PASSED"
