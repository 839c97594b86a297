#!/usr/bin/env bash
# Sets everything up, builds kindling and boots the default guest, showing
# its console:
#  - stock Linux (Debian's cloud kernel + a busybox initramfs) where the host
#    has hardware virtualisation (vmx/svm) and /dev/kvm;
#  - the `hello` test guest where /dev/kvm is this fleet's kvm_pvm, which
#    cannot run a stock kernel's ring-0 code (shared/notes/environment.md);
#  - where there is no /dev/kvm at all, kindling cannot run a guest: the
#    demo says so, boots the same test guest under QEMU (TCG) so you can
#    see what it prints, and runs kindling to show its error.
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
echo "demo: this host has no /dev/kvm at all ($(dmesg 2>/dev/null | grep -m1 -o 'kvm-pvm: .*' || echo 'no KVM module bound')),"
echo "demo: so kindling cannot start a VM here. This is what kindling says:"
"$kindling" run --kernel "$hello" --cmdline "kindling demo"
echo "demo: (exit status $?). The same guest under QEMU/TCG, as a reference for its console:"
timeout 60 qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on \
  -accel tcg -cpu qemu64 -m 128 -nodefaults -no-user-config -display none \
  -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -kernel "$hello" -append "kindling demo" </dev/null
echo "demo: QEMU exit status $? (= guest status 0 << 1 | 1)"
