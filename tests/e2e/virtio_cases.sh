# The virtio device cases, as one POSIX sh script (busybox is enough), run
# by virtio_test.sh in a directory holding ./kindling and the test guests —
# on the host where /dev/kvm works, else inside tools/nested-kvm. Each case
# prints `=== begin NAME`, kindling's output, `=== end NAME status N` — the
# end marker on a line of its own even when a kill cut the guest's last
# line short (end_case);
# host-side checks of the disk files print `check: FAIL ...` on failure.
K=./kindling

mkdisk() {
  rm -f "$1"
  dd if=/dev/zero of="$1" bs=1024 count=4096 2>/dev/null
}
sector() { dd if="$1" bs=512 skip="$2" count=1 2>/dev/null; }
# check_sector FILE SECTOR TEXT: TEXT in that sector ("" = all zeros).
check_sector() {
  if [ -z "$3" ]; then
    [ -z "$(sector "$1" "$2" | tr -d '\000')" ] ||
      echo "check: FAIL sector $2 of $1 is not all zeros"
  else
    sector "$1" "$2" | grep -q "$3" || echo "check: FAIL sector $2 of $1 lacks '$3'"
  fi
}
# end_case NAME STATUS: a newline first, in case the output before it was
# cut mid-line (a killed VMM, a crashed one).
end_case() { printf '\n=== end %s status %s\n' "$1" "$2"; }
run() {
  name=$1
  shift
  echo "=== begin $name"
  $K run "$@" 2>&1 </dev/null
  end_case "$name" $?
}

mkdisk blk.img
run blk --kernel virtio_blk.elf --disk blk.img
# The device counters `--stats` prints (GetMetrics returns the same).
mkdisk stats.img
$K run --kernel virtio_blk.elf --disk stats.img --stats </dev/null >blk_stats.out 2>&1
for c in read_ops write_ops flush_ops; do
  grep -q "^kindling: stat virtio.blk0.$c [1-9]" blk_stats.out ||
    echo "check: FAIL --stats lacks virtio.blk0.$c > 0"
done
check_sector blk.img 1 "kindling-blk sector 1"
check_sector blk.img 164 "kindling-blk sector 164"
check_sector blk.img 8 ""

mkdisk plain.img
run blk_plain --kernel virtio_blk.elf --disk plain.img --cmdline "blk.indirect=0 blk.event_idx=0"
check_sector plain.img 1 "kindling-blk sector 1"

mkdisk split.img
run blk_split --kernel virtio_blk.elf --disk split.img --irqchip split
check_sector split.img 164 "kindling-blk sector 164"

mkdisk ro.img
echo "read-only marker" | dd of=ro.img conv=notrunc 2>/dev/null
before=$(md5sum <ro.img)
run blk_ro --kernel virtio_blk.elf --disk ro.img,ro
[ "$(md5sum <ro.img)" = "$before" ] || echo "check: FAIL the read-only disk changed"

# A flush acknowledged to the guest survives killing the VMM right after.
mkdisk kill.img
echo "=== begin flush_kill"
$K run --kernel virtio_blk.elf --disk kill.img --cmdline blk.hold >kill.out 2>&1 </dev/null &
pid=$!
i=0
while ! grep -q "virtio-blk: flushed" kill.out && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
kill -9 $pid
wait $pid
status=$?
cat kill.out
end_case flush_kill $status
check_sector kill.img 1 "kindling-blk sector 1"
check_sector kill.img 164 "kindling-blk sector 164"

run misc --kernel virtio_misc.elf --rng --console virtio

mkdisk hostile.img
run hostile --kernel virtio_hostile.elf --disk hostile.img --rng

# The same guests over virtio-pci (modern, MSI-X).
mkdisk pci.img
run blk_pci --kernel virtio_blk.elf --disk pci.img --transport pci
check_sector pci.img 164 "kindling-blk sector 164"
check_sector pci.img 8 ""

run misc_pci --kernel virtio_misc.elf --rng --console virtio --transport pci

mkdisk hostile_pci.img
run hostile_pci --kernel virtio_hostile.elf --disk hostile_pci.img --rng --transport pci

# virtio-net: frames cross a TAP. kindling creates the TAP (in a network
# namespace of its own where `ip netns` works, e.g. on a host; directly in
# a nested guest), the script gives it 10.0.2.2, the guest (10.0.2.15)
# resolves and pings it, and the host pings the guest back.
net_case() {
  tap=ktap$$
  ns=""
  if ip netns add kindling$$ 2>/dev/null; then ns="ip netns exec kindling$$"; fi
  echo "=== begin net"
  $ns $K run --kernel virtio_net.elf --net tap=$tap,mac=52:54:00:12:34:56 \
    --cmdline "net.ip=10.0.2.15 net.peer=10.0.2.2 net.serve_ms=5000" >net.out 2>&1 </dev/null &
  pid=$!
  i=0
  while ! $ns ip link show $tap >/dev/null 2>&1 && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
  $ns ip addr add 10.0.2.2/24 dev $tap
  $ns ip link set $tap up
  i=0
  while ! grep -q "serving for" net.out && [ $i -lt 300 ]; do sleep 0.05; i=$((i + 1)); done
  ping=ping
  command -v ping >/dev/null 2>&1 || ping="busybox ping"
  if $ns $ping -c 3 -W 2 10.0.2.15 >ping.out 2>&1; then ping_result=ok; else ping_result=failed; fi
  wait $pid
  status=$?
  cat net.out
  echo "host: ping 10.0.2.15 $ping_result"
  [ $ping_result = ok ] || cat ping.out
  end_case net $status
  [ -n "$ns" ] && ip netns del kindling$$
}
net_case

# virtio-vsock: the host connects to the guest (CONNECT 1234 on v.sock),
# then the guest connects to host port 1235 (kindling dials v.sock_1235).
rm -f v.sock v.sock_1235
./uds_vsock_peer echo v.sock_1235 >peer_echo.out 2>&1 &
echo_pid=$!
echo "=== begin vsock"
$K run --kernel virtio_vsock.elf --vsock cid=3,uds=v.sock \
  --cmdline "vsock.listen=1234 vsock.connect=1235 vsock.wait_ms=30000" >vsock.out 2>&1 </dev/null &
pid=$!
./uds_vsock_peer connect v.sock 1234 >peer_connect.out 2>&1
wait $pid
status=$?
wait $echo_pid
cat vsock.out peer_connect.out peer_echo.out
end_case vsock $status

# virtio-balloon: the guest touches 64 MiB; with a 48 MiB target it hands
# 48 MiB back, and kindling's RSS while it holds must be >= 40 MiB lower
# than with no target.
balloon_run() {
  $K run --kernel virtio_balloon.elf --memory 256 --balloon amount_mib=$1,stats_s=1 \
    --cmdline "balloon.touch_mib=64 balloon.hold_ms=3000" >balloon$1.out 2>&1 </dev/null &
  pid=$!
  i=0
  while ! grep -q "virtio-balloon: holding" balloon$1.out && [ $i -lt 400 ]; do
    sleep 0.05
    i=$((i + 1))
  done
  sleep 0.5
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
  wait $pid
  status=$?
}
balloon_run 0
rss0=$rss
echo "=== begin balloon"
balloon_run 48
cat balloon48.out
echo "host: rss while holding: $rss0 KiB without a target, $rss KiB with 48 MiB"
if [ -z "$rss0" ] || [ -z "$rss" ] || [ $((rss0 - rss)) -lt 40960 ]; then
  echo "check: FAIL the balloon did not lower kindling's RSS by 40 MiB ($rss0 -> $rss KiB)"
fi
end_case balloon $status
