#!/usr/bin/env bash
# Bazel test: virtio_vsock against QEMU's vhost-vsock-device, which needs
# the host kernel's vhost_vsock (/dev/vhost-vsock) — absent on this fleet's
# hosts, so it runs inside tools/nested-kvm (an L1 Linux under TCG with
# /dev/kvm and vhost_vsock loaded). In L1: vsock_peer listens on port 1235
# (echo) and connects to the guest's port 1234, while QEMU (-accel kvm)
# boots the guest with `vsock.listen=1234 vsock.connect=1235`, guest CID 3.
#
#   vsock_nested_test.sh RUN_SH VSOCK_PEER GUEST.elf EXPECT
#
# EXPECT is matched (expect_lib.sh) against the L1 output: the guest's
# serial lines, `qemu status <n>`, then the peer's connect and echo logs.
# SKIP when run.sh cannot boot L1 or QEMU is not installed (a failure under
# CI=true, whose setup installs QEMU).
set -uo pipefail
run=$1 peer=$2 elf=$3 expect=$4
source "$(dirname "${BASH_SOURCE[0]}")/expect_lib.sh"
qemu=$(command -v qemu-system-x86_64) || skip_installable "qemu-system-x86_64 not installed"
share=/usr/share/qemu
[[ -f $share/bios-microvm.bin ]] || skip_installable "no $share/bios-microvm.bin (qemu-system-x86)"
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/vsock_nested.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/l1.sh" <<'L1'
./vsock_peer echo 1235 60 >peer_echo.log 2>&1 &
./vsock_peer connect 3 1234 60 >peer_conn.log 2>&1 &
timeout 120 ./qemu-system-x86_64 -L /work/qemu-share \
  -M microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on,acpi=off \
  -accel kvm -cpu host -m 128 -nodefaults -no-user-config -display none \
  -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -global virtio-mmio.force-legacy=false -device vhost-vsock-device,guest-cid=3 \
  -kernel virtio_vsock.elf -append "vsock.listen=1234 vsock.connect=1235" </dev/null
echo "qemu status $?"
wait
cat peer_conn.log peer_echo.log
L1
cp "$elf" "$tmp/virtio_vsock.elf"
"$run" --outcome "$tmp/outcome" --timeout 300 --module vhost_vsock --bin "$qemu" --bin "$peer" \
  --file "$share:qemu-share" --file "$tmp/virtio_vsock.elf" --file "$tmp/l1.sh" \
  -- sh l1.sh >"$tmp/out" 2>"$tmp/err"
rc=$?
tr -d '\r' <"$tmp/out" >"$tmp/log"
cat "$tmp/log"
cat "$tmp/err"
[[ $(cat "$tmp/outcome" 2>/dev/null) == skip* ]] && exit 0  # run.sh printed `SKIP: <reason>`
[[ $rc -eq 0 ]] || { echo "FAIL: run.sh exited $rc"; exit 1; }
failed=0
fail() { echo "vsock_nested_test: FAILED: $*"; failed=1; }
load_expect "$expect"
match_lines "$tmp/log"
((failed)) && exit 1
echo "vsock_nested_test: PASSED"
