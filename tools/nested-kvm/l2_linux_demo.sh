#!/usr/bin/env bash
# Demo and reference: boot Debian's stock kernel as an L2 guest with
# `qemu-system-x86_64 -enable-kvm` inside the nested-KVM L1 guest, i.e. what a
# kindling boot test does with `kindling run` instead of QEMU.
# Exit status as run.sh; prints the L2 guest's console.
#   l2_linux_demo.sh [--outcome FILE]   (run.sh's --outcome: `skip REASON`, ...)
set -uo pipefail
here=$(dirname "$(readlink -f "$0")")
outcome=()
[[ ${1:-} == --outcome ]] && outcome=(--outcome "${2:?}")
kdir=$("$here/run.sh" "${outcome[@]}" --print-kernel-dir) || exit $?
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
mkdir -p "$w/root/bin" "$w/root/proc" "$w/root/dev" "$w/fw"
cp "$kdir/root/bin/busybox" "$w/root/bin/"
cat >"$w/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "L2 userspace up at $(/bin/busybox cut -d' ' -f1 /proc/uptime)s uptime"
/bin/busybox dmesg | /bin/busybox grep -E 'Hypervisor detected|clocksource: Switched'
/bin/busybox poweroff -f
INIT
chmod +x "$w/root/init"
(cd "$w/root" && find . | "$kdir/root/bin/busybox" cpio -o -H newc 2>/dev/null) >"$w/l2-initrd.cpio"
cp /usr/share/qemu/bios-microvm.bin "$w/fw/"
cat >"$w/boot-l2.sh" <<'BOOT'
t0=$(cut -d' ' -f1 /proc/uptime)
qemu-system-x86_64 -L fw -M microvm,x-option-roms=off,isa-serial=on,rtc=on \
  -enable-kvm -cpu host -m 256 -nodefaults -no-user-config -display none \
  -serial stdio -no-reboot -kernel vmlinux -initrd l2-initrd.cpio \
  -append "console=ttyS0 quiet panic=-1" </dev/null
rc=$?
echo "L2 QEMU exited $rc after $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { print b - a }')s"
exit $rc
BOOT
"$here/run.sh" "${outcome[@]}" --mem 2048 --timeout 240 --bin "$(command -v qemu-system-x86_64)" \
  --file "$w/fw" --file "$kdir/vmlinux" --file "$w/l2-initrd.cpio" --file "$w/boot-l2.sh" \
  -- sh boot-l2.sh
