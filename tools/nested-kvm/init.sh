#!/bin/busybox sh
# PID 1 of the nested-KVM guest built by tools/nested-kvm/run.sh.
# Loads the KVM modules, runs /nested/cmd in /work, reports its status as
# `NESTED-EXIT=<code>` (or `NESTED-KVM-UNAVAILABLE: <why>`), powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
/bin/busybox --install -s /bin
export PATH=/bin HOME=/work TMPDIR=/tmp
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# Plain "\n" on the console: the host passes the output through unchanged.
stty -opost 2>/dev/null

bye() { sync; poweroff -f; sleep 5; echo o >/proc/sysrq-trigger; }
fail() { echo "NESTED-KVM-UNAVAILABLE: $*"; bye; }

if grep -qw svm /proc/cpuinfo; then
  vendor=amd skipmod=kvm-intel
elif grep -qw vmx /proc/cpuinfo; then
  vendor=intel skipmod="kvm-amd ccp"
else
  fail "the L1 CPU has neither svm nor vmx ($(grep -m1 '^model name' /proc/cpuinfo)); use a QEMU -cpu with svm"
fi
for m in $(cat /lib/modules/order); do
  case " $skipmod " in *" $m "*) continue ;; esac
  if ! out=$(insmod /lib/modules/$m.ko 2>&1); then
    fail "insmod $m.ko: $out; dmesg: $(dmesg | grep -i -E 'kvm|svm|vmx|ccp' | tail -4 | tr '\n' ' ')"
  fi
done
[ -c /dev/kvm ] || fail "kvm-$vendor loaded but no /dev/kvm; dmesg: $(dmesg | grep -i kvm | tail -4 | tr '\n' ' ')"
echo "nested-kvm: L1 ready at $(cut -d' ' -f1 /proc/uptime)s uptime, kvm-$vendor loaded, $(nproc) vCPU, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"

for m in $(cat /nested/modules); do
  grep -q "^${m//-/_} " /proc/modules && continue
  if ! out=$(insmod /lib/modules/$m.ko 2>&1); then
    echo "NESTED-ERROR: --module: insmod $m.ko: $out; dmesg: $(dmesg | tail -3 | tr '\n' ' ')"
    bye
  fi
done

. /nested/env
cd /work
sh /nested/cmd
rc=$?
echo "NESTED-EXIT=$rc"
bye
