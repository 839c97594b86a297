#!/usr/bin/env bash
# tiny_vmm (examples/tiny_vmm.cc) boots hello.elf and virtio_blk.elf; the
# disk guest's writes are on the host file afterwards.
# Usage: tiny_vmm_test.sh TINY_VMM HELLO.elf VIRTIO_BLK.elf
set -uo pipefail
vmm=$1 hello=$2 blk=$3
# -c first: as root, `exec 3<>` on a missing /dev/kvm would create a
# regular file there, which later tests then take for KVM.
if [[ ! -c /dev/kvm ]] || ! { exec 3<>/dev/kvm; } 2>/dev/null; then
  echo "SKIP: /dev/kvm is not usable here"
  exit 0
fi
exec 3>&-
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/tiny.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0
fail() { echo "FAIL: $*"; failed=1; }

truncate -s 4M "$tmp/disk.img"
timeout 60 "$vmm" "$hello" "$tmp/disk.img" >"$tmp/hello.out" 2>&1
status=$?
tr -d '\r' <"$tmp/hello.out"
((status == 0)) || fail "hello: exit status $status, want 0"
grep -q "^kindling hello guest" "$tmp/hello.out" || fail "hello: no greeting on the console"
grep -q "^cmdline: console=ttyS0 virtio_mmio.device=4K@0xd0000000:5" "$tmp/hello.out" || fail "hello: the command line did not arrive"

timeout 60 "$vmm" "$blk" "$tmp/disk.img" >"$tmp/blk.out" 2>&1
status=$?
tr -d '\r' <"$tmp/blk.out"
((status == 0)) || fail "virtio-blk guest: exit status $status, want 0"
for want in 'virtio-blk: id "tiny0"' "virtio-blk: read back 1024 KiB ok" "virtio-blk: flushed"; do
  grep -qF "$want" "$tmp/blk.out" || fail "virtio-blk guest: no '$want'"
done
dd if="$tmp/disk.img" bs=512 skip=1 count=1 2>/dev/null | grep -q "kindling-blk sector 1" ||
  fail "sector 1 of the disk lacks the guest's write"

# Bad input: a missing guest image is an error naming the file, not a crash.
"$vmm" "$tmp/missing.elf" "$tmp/disk.img" >"$tmp/bad.out" 2>&1
status=$?
((status == 1)) && grep -q "missing.elf" "$tmp/bad.out" ||
  fail "missing guest: status $status, output: $(cat "$tmp/bad.out")"

((failed)) && exit 1
echo "PASS: tiny_vmm booted hello and the virtio-blk guest"
