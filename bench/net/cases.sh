# bench/net's measurements as one POSIX sh script (busybox is enough), run
# by bench/net/run.sh on the host, or inside tools/nested-kvm where the host
# has no /dev/kvm. Runs in a directory holding the programs it is given:
#
#   K=./kindling Q=qemu-system-x86_64 QFW=<dir with bios-microvm.bin or "">
#   G=virtio_net.elf NB=./netbench RUNS=3 SECS=5 LEN=1472 DIRS="tx rx"
#   LIMIT=1 (also measure the host's TAP -> UDP socket limit)
#   sh cases.sh
#
# Every run is one VMM booting the virtio_net guest on a fresh TAP (in a
# network namespace of its own where `ip netns` works), 10.0.2.2/24 on the
# host side, 10.0.2.15 in the guest. Runs are interleaved: run 1 of every
# VMM, then run 2, ... Each prints `=== begin <vmm> <dir> <run>`, the
# outputs, and a line
#   result <vmm> <dir> <run> host <MB/s> guest <MB/s> status <n> t <t0> <t1>
# (t0, t1: seconds since midnight, this machine's clock)
# host = what the host's UDP socket received (tx) or what netbench sent
# (rx), guest = the guest's own figure (tx: sent, rx: received); "-" when
# missing.
LOG=${LOG:-.}
# mbs, now, one (the run-and-retry loop)
. "$(dirname "$0")/cases_lib.sh"
tap=kbt$$

vmm_cmd() {  # VMM CMDLINE: the command line booting the guest on $tap
  case $1 in
    kindling) echo "$K run --kernel $G --memory 128 --net tap=$tap,mac=52:54:00:12:34:56 --cmdline \"$2\"" ;;
    qemu) echo "$Q ${QFW:+-L $QFW} -M microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on,acpi=off" \
      "-global virtio-mmio.force-legacy=false -accel kvm -cpu qemu64 -m 128 -nodefaults" \
      "-no-user-config -display none -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04" \
      "-netdev tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off" \
      "-device virtio-net-device,netdev=n0,mac=52:54:00:12:34:56 -kernel $G -append \"$2\"" ;;
  esac
}

# The TAP exists (the VMM or netbench created it): address it, bring it up.
tap_up() {
  i=0
  while ! $ns ip link show $tap >/dev/null 2>&1 && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
  $ns ip addr add 10.0.2.2/24 dev $tap
  $ns ip link set $tap up
}

netns_begin() {
  ns=""
  if ip netns add kbench$$ 2>/dev/null; then
    ns="ip netns exec kbench$$"
    $ns ip link set lo up
  fi
}
netns_end() { [ -n "$ns" ] && ip netns del kbench$$; }

attempt() {  # VMM DIR RUN: one boot of the guest; sets $status and $figures
  vmm=$1 dir=$2 run=$3
  out=$LOG/$vmm-$dir-$run
  echo "=== begin $vmm $dir $run"
  netns_begin
  base="net.ip=10.0.2.15 net.peer=10.0.2.2 net.event_idx=1 net.bench_len=$LEN"
  if [ "$dir" = tx ]; then
    $ns $NB sink 0.0.0.0 5001 60 >$out.host 2>&1 &
    host_pid=$!
    cmd=$(vmm_cmd $vmm "$base net.bench_secs=$SECS")
  else
    cmd=$(vmm_cmd $vmm "$base net.bench_rx_secs=$SECS")
  fi
  eval "$ns $cmd" >$out.guest 2>&1 </dev/null &
  pid=$!
  tap_up
  if [ "$dir" = rx ]; then
    i=0
    while ! grep -q "bench rx on" $out.guest 2>/dev/null && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
    $ns $NB blast 10.0.2.15 5001 $((SECS + 1)) $LEN >$out.host 2>&1
  fi
  wait $pid
  status=$?
  [ "$dir" = tx ] && wait $host_pid
  cat $out.guest $out.host
  netns_end
  if [ "$dir" = tx ]; then
    figures="host $(mbs $out.host '^sink: ') guest $(mbs $out.guest 'bench tx .* frames')"
  else
    figures="host $(mbs $out.host '^blast: ') guest $(mbs $out.guest 'bench rx .* frames')"
  fi
}

# The host's own limit: netbench writes frames into a TAP as a VMM would
# (one write per frame, vnet header), the UDP socket counts them.
limit() {  # RUN
  t0=$(now)
  out=$LOG/limit-$1
  echo "=== begin limit tx $1"
  netns_begin
  $ns $NB sink 0.0.0.0 5001 60 >$out.host 2>&1 &
  host_pid=$!
  $ns $NB tap $tap $SECS $LEN 5001 >$out.tap 2>&1 &
  pid=$!
  tap_up
  wait $pid
  wait $host_pid
  cat $out.tap $out.host
  netns_end
  echo "result limit tx $1 host $(mbs $out.host '^sink: ') guest $(mbs $out.tap '^tap: ') status 0 t $t0 $(now)"
}

r=1
while [ $r -le "$RUNS" ]; do
  for dir in $DIRS; do
    for vmm in kindling qemu; do one $vmm $dir $r; done
  done
  [ "${LIMIT:-1}" = 1 ] && limit $r
  r=$((r + 1))
done
echo "=== done"
