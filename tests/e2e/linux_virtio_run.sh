#!/bin/sh
# One linux_virtio_test boot (POSIX sh: runs on the host or in busybox sh
# inside tools/nested-kvm): the host sides of vsock (uds_vsock_peer) and of
# the TAP (10.0.2.2/24 once kindling has created it), kindling with every
# virtio device on one transport, then the disk file's sector 1.
#
#   linux_virtio_run.sh KINDLING KERNEL INITRD DISK TRANSPORT PEER WORKDIR \
#                       MAC BALLOON_MIB CMDLINE_EXTRA
kindling=$1 kernel=$2 initrd=$3 disk=$4 t=$5 peer=$6 work=$7 mac=$8 balloon=$9
shift 9
extra=$1
cd "$work" || exit 1
# TRANSPORT may end in -packed: packed virtqueues offered too.
transport=${t%-packed}
ring=split
[ "$transport" != "$t" ] && ring=packed
pcioff=" pci=off"
[ "$transport" = pci ] && pcioff=""
rm -f v.sock v.sock_1235
"$peer" echo v.sock_1235 120 >peer_echo.out 2>&1 &
echo_pid=$!
"$kindling" run --kernel "$kernel" --initrd "$initrd" --memory 256 \
  --transport "$transport" --virtqueue "$ring" --disk "$disk" --rng --console virtio \
  --net "tap=kvt0,mac=$mac" --vsock cid=3,uds=v.sock --balloon "amount_mib=$balloon" \
  --cmdline "console=ttyS0 reboot=k panic=-1 quiet$pcioff lv.tag=$t lv.mac=$mac lv.balloon_mib=$balloon$extra" &
pid=$!
i=0
while [ ! -e /sys/class/net/kvt0 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
{ ip addr add 10.0.2.2/24 dev kvt0 && ip link set kvt0 up; } || echo "linux-virtio-host: cannot set up the TAP"
"$peer" connect v.sock 1234 120 >peer_connect.out 2>&1
wait $pid
rc=$?
wait $echo_pid
cat peer_connect.out peer_echo.out
if dd if="$disk" bs=512 skip=1 count=1 2>/dev/null | grep -q "KINDLING-LINUX-WROTE-$t"; then
  echo "linux-virtio-host: disk sector 1 ok"
else
  echo "linux-virtio-host: disk sector 1 does not hold the guest's marker"
fi
exit $rc
