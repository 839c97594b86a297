#!/usr/bin/env bash
# Sets everything up, builds kindling and boots the default guest, showing
# its console:
#  - stock Linux (Debian's cloud kernel + a busybox initramfs) where the host
#    has hardware virtualisation (vmx/svm) and /dev/kvm;
#  - the `hello` test guest where /dev/kvm is this fleet's kvm_pvm, which
#    cannot run a stock kernel's ring-0 code (shared/notes/environment.md);
#  - where there is no /dev/kvm at all (this project's CI machines), kindling
#    runs inside a QEMU/TCG guest that has nested KVM (tools/nested-kvm) and
#    boots the stock kernel there.
set -uo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh || exit 1
bazel build //launcher:kindling //tests/guests:hello.elf 2>&1 | tail -n 3
kindling=bazel-bin/launcher/kindling
hello=bazel-bin/tests/guests/hello.elf

if grep -qE 'vmx|svm' /proc/cpuinfo && [[ -c /dev/kvm ]]; then
  echo "demo: hardware KVM here: booting Debian's stock cloud kernel under kindling"
  kernel=$(./tools/fetch-kernel.sh) || exit 1
  ./tools/make-initramfs.sh /tmp/kindling-demo-initrd.gz >/dev/null || exit 1
  exec "$kindling" run --kernel "$kernel" --initrd /tmp/kindling-demo-initrd.gz \
    --cpus 2 --memory 256 --cmdline "console=ttyS0 reboot=k panic=-1"
fi
if [[ -c /dev/kvm ]]; then
  echo "demo: /dev/kvm here is not hardware KVM (no vmx/svm: nested kvm_pvm," \
       "where stock kernels cannot boot): booting the hello test guest"
  exec "$kindling" run --kernel "$hello" --cmdline "kindling demo"
fi
echo "demo: this host has no /dev/kvm ($(dmesg 2>/dev/null | grep -m1 -o 'kvm-pvm: .*' || echo 'no KVM module bound'))."
echo "demo: running kindling inside a QEMU/TCG guest whose emulated AMD SVM gives it a"
echo "demo: real /dev/kvm (tools/nested-kvm), and booting Debian's stock cloud kernel"
echo "demo: there with a busybox initramfs. Everything is emulated: expect ~30 s."
kernel=$(./tools/fetch-kernel.sh) || exit 1
./tools/make-initramfs.sh /tmp/kindling-demo-initrd.gz >/dev/null || exit 1
exec ./tools/nested-kvm/run.sh --mem 1536 --timeout 300 --bin "$kindling" \
  --file "$kernel:vmlinuz" --file /tmp/kindling-demo-initrd.gz:initrd.gz -- \
  ./kindling run --kernel vmlinuz --initrd initrd.gz --cpus 2 --memory 256 \
  --cmdline "console=ttyS0 reboot=k panic=-1 pci=off"
