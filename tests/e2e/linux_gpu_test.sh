#!/usr/bin/env bash
# Debian's stock kernel drives kindling's virtio-gpu: its own virtio-pci and
# virtio-gpu (DRM) modules bind the device and set the mode it offers, fbcon
# draws the console, and the screenshot shows the text (linux_gpu_check,
# from linux_gpu_init.sh's initramfs). The kernel is Debian's generic one as
# tools/nested-kvm caches it, with its modules: the cloud kernel the other
# stock-Linux tests boot has no DRM. Where this host has no usable
# /dev/kvm, linux_gpu_check runs inside tools/nested-kvm.
#
#   linux_gpu_test.sh LINUX_GPU_CHECK
set -uo pipefail
check=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
run=$root/tools/nested-kvm/run.sh
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/linux-gpu.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
kdir=$("$run" --outcome "$tmp/outcome" --print-kernel-dir)
rc=$?
[[ $(cat "$tmp/outcome" 2>/dev/null) == skip* ]] && exit 0  # run.sh printed SKIP: why
((rc == 0)) || { echo "FAIL: tools/nested-kvm could not prepare its kernel ($rc)"; exit 1; }

# The initramfs: busybox, the modules in load order, /init.
mkdir -p "$tmp/root/bin" "$tmp/root/lib/modules" "$tmp/root/proc" "$tmp/root/sys" "$tmp/root/dev"
cp "$kdir/root/bin/busybox" "$tmp/root/bin/"
order="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci drm drm_kms_helper
       drm_shmem_helper virtio_dma_buf virtio-gpu"
for m in $order; do
  cp "$kdir/root/lib/modules/$m.ko" "$tmp/root/lib/modules/" ||
    { echo "FAIL: $m.ko is not in $kdir (tools/nested-kvm's EXTRA_MODULES)"; exit 1; }
done
echo $order >"$tmp/root/lib/modules/order"
cp "$root/tests/e2e/linux_gpu_init.sh" "$tmp/root/init" && chmod 755 "$tmp/root/init"
(cd "$tmp/root" && find . | "$kdir/root/bin/busybox" cpio -o -H newc 2>/dev/null | gzip) \
  >"$tmp/initrd.gz" || { echo "FAIL: cpio"; exit 1; }

if [[ -c /dev/kvm ]] && { exec 3<>/dev/kvm; } 2>/dev/null; then
  "$check" "$kdir/vmlinux" "$tmp/initrd.gz" | tr -d '\r' | tee "$tmp/log"
else
  echo "linux_gpu_test: no usable /dev/kvm: running linux_gpu_check under nested KVM"
  "$run" --outcome "$tmp/outcome" --mem 1024 --timeout 500 --bin "$check" \
    --file "$kdir/vmlinux:vmlinux" --file "$tmp/initrd.gz:initrd.gz" \
    -- ./linux_gpu_check vmlinux initrd.gz 2>&1 | tr -d '\r' | tee "$tmp/log"
  [[ $(cat "$tmp/outcome" 2>/dev/null) == skip* ]] && exit 0
fi
failed=0
bad() { echo "FAILED: $*"; failed=1; }
grep -qE '^linux-gpu: virtio[0-9]+ device 0x0010 driver virtio_gpu' "$tmp/log" ||
  bad "no virtio device 0x0010 bound to the stock virtio_gpu driver"
grep -qE '^linux-gpu: fb0 virtio_gpudrmfb 640,480' "$tmp/log" ||
  bad "no 640x480 virtio_gpudrmfb framebuffer"
grep -q '^linux-gpu: FAIL' "$tmp/log" && bad "$(grep '^linux-gpu: FAIL' "$tmp/log" | head -n3)"
grep -q '^linux-gpu-check: ok' "$tmp/log" || bad "linux_gpu_check did not pass"
((failed)) && exit 1
echo "linux_gpu_test: PASSED"
