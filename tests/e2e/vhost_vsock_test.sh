#!/usr/bin/env bash
# Bazel test: kindling's vhost-vsock backend (--vsock cid=3,vhost) with the
# virtio_vsock test guest, over virtio-mmio and virtio-pci. The host side is
# vsock_peer on AF_VSOCK: it connects to the guest's port 1234 and echoes
# what the guest sends to port 1235. Runs where /dev/vhost-vsock exists
# (with a usable /dev/kvm), else inside tools/nested-kvm with vhost_vsock
# loaded; SKIP when neither is possible.
#
#   vhost_vsock_test.sh RUN_SH KINDLING VSOCK_PEER GUEST.elf EXPECT
set -uo pipefail
run=$1 kindling=$2 peer=$3 elf=$4 expect=$5
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=../guests/expect_lib.sh
source "$here/../guests/expect_lib.sh"
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/vhost_vsock.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/cases.sh" <<'CASES'
for t in mmio pci; do
  echo "=== begin $t"
  ./vsock_peer echo 1235 60 >peer_echo.log 2>&1 &
  echo_pid=$!
  ./vsock_peer connect 3 1234 60 >peer_conn.log 2>&1 &
  conn_pid=$!
  ./kindling run --kernel virtio_vsock.elf --transport $t --vsock cid=3,vhost \
    --cmdline "vsock.listen=1234 vsock.connect=1235 vsock.wait_ms=30000" </dev/null 2>&1
  echo "kindling status $?"
  wait $conn_pid $echo_pid
  cat peer_conn.log peer_echo.log
  echo "=== end $t"
done
CASES
cp "$kindling" "$peer" "$elf" "$tmp/"
chmod u+w "$tmp"/*
if [[ -e /dev/vhost-vsock && -c /dev/kvm ]] && { exec 3<>/dev/kvm; } 2>/dev/null; then
  exec 3>&-
  (cd "$tmp" && sh cases.sh) >"$tmp/raw" 2>&1
else
  echo "vhost_vsock_test: no /dev/vhost-vsock (or /dev/kvm) here: running under nested KVM"
  "$run" --outcome "$tmp/outcome" --mem 1024 --timeout 300 --module vhost_vsock --bin "$tmp/kindling" --bin "$tmp/vsock_peer" \
    --file "$tmp/virtio_vsock.elf" --file "$tmp/cases.sh" -- sh cases.sh >"$tmp/raw" 2>"$tmp/err"
  rc=$?
  cat "$tmp/err"
  [[ $(cat "$tmp/outcome" 2>/dev/null) == skip* ]] && exit 0  # run.sh printed `SKIP: <reason>`
  [[ $rc -eq 0 ]] || { tr -d '\r' <"$tmp/raw"; echo "FAIL: run.sh exited $rc"; exit 1; }
fi
tr -d '\r' <"$tmp/raw" >"$tmp/log"
cat "$tmp/log"
failed=0
fail() { echo "vhost_vsock_test: FAILED: $*"; failed=1; }
load_expect "$expect"
match_lines "$tmp/log"
((failed)) && exit 1
echo "vhost_vsock_test: PASSED"
