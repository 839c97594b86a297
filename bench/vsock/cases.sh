# bench/vsock's measurements as one POSIX sh script (busybox is enough), run
# by bench/vsock/run.sh on the host or inside tools/nested-kvm. Runs in a
# directory holding the programs it is given:
#
#   K=./kindling Q=qemu-system-x86_64 QFW=<dir with bios-microvm.bin or "">
#   G=virtio_vsock.elf VB=./vsockbench RUNS=3 MIB=64 PKT=4096
#   DIRS="tx rx" VMMS="kindling qemu" LIMIT=1 sh cases.sh
#
# kindling: --vsock cid=3,uds=$PWD/v.sock (Firecracker's Unix-socket
# convention); kindling-vhost: --vsock cid=3,vhost and QEMU:
# -device vhost-vsock-device,guest-cid=3 (both need /dev/vhost-vsock; the
# host side is AF_VSOCK). Per run and direction:
#   tx: the guest connects to host port 5201 and sends MIB MiB in PKT-byte
#       packets; vsockbench listens (kindling: on v.sock_5201; QEMU: AF_VSOCK
#       port 5201) and times first byte -> EOF: that is the figure;
#   rx: the guest listens on port 5202; vsockbench connects (kindling:
#       v.sock + `CONNECT 5202`; QEMU: AF_VSOCK cid 3) and writes MIB MiB;
#       the guest's count (first -> last data packet) is the figure;
#   limit: MIB MiB through a Unix socket pair, PKT bytes per write (one
#       guest packet per write), and limit64k: 64 KiB per write (kindling
#       writes whatever packets queued up meanwhile in one go, at most its
#       64 KiB credit window).
# Runs are interleaved. Each prints `=== begin <vmm> <dir> <run>`, the
# outputs, and `result <vmm> <dir> <run> host <MB/s> guest <MB/s> status <n>
# t <t0> <t1>` (seconds since midnight, this machine's clock). A failed run
# is repeated (twice at most), with a `retry ...` line.
LOG=${LOG:-.}
# mbs, now, one (the run-and-retry loop)
. "$(dirname "$0")/cases_lib.sh"

vmm_cmd() {  # VMM CMDLINE
  case $1 in
    kindling) echo "$K run --kernel $G --memory 128 --vsock cid=3,uds=$PWD/v.sock --cmdline \"$2\"" ;;
    kindling-vhost) echo "$K run --kernel $G --memory 128 --vsock cid=3,vhost --cmdline \"$2\"" ;;
    qemu) echo "$Q ${QFW:+-L $QFW} -M microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on,acpi=off" \
      "-global virtio-mmio.force-legacy=false -accel kvm -cpu qemu64 -m 128 -nodefaults" \
      "-no-user-config -display none -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04" \
      "-device vhost-vsock-device,guest-cid=3 -kernel $G -append \"$2\"" ;;
  esac
}

attempt() {  # VMM DIR RUN: one boot of the guest; sets $status and $figures
  vmm=$1 dir=$2 run=$3
  out=$LOG/$vmm-$dir-$run
  echo "=== begin $vmm $dir $run"
  rm -f v.sock v.sock_*
  base="vsock.event_idx=1 vsock.timeout_ms=30000"
  if [ "$dir" = tx ]; then
    if [ $vmm = kindling ]; then $VB sink unix $PWD/v.sock_5201 120 >$out.host 2>&1 &
    else $VB sink vsock 5201 120 >$out.host 2>&1 &
    fi
    host_pid=$!
    i=0
    while ! grep -q ready $out.host 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    eval "$(vmm_cmd $vmm "$base vsock.bench_port=5201 vsock.bench_mib=$MIB vsock.bench_pkt=$PKT")" \
      >$out.guest 2>&1 </dev/null
    status=$?
    wait $host_pid
  else
    eval "$(vmm_cmd $vmm "$base vsock.bench_rx_port=5202 vsock.wait_ms=60000")" >$out.guest 2>&1 </dev/null &
    pid=$!
    i=0
    while ! grep -q "bench rx listening" $out.guest 2>/dev/null && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
    if [ $vmm = kindling ]; then $VB send unix $PWD/v.sock 5202 $MIB >$out.host 2>&1
    else $VB send vsock 3 5202 $MIB >$out.host 2>&1
    fi
    wait $pid
    status=$?
  fi
  cat $out.guest $out.host
  figures="host $(mbs $out.host '^(sink|send): ') guest $(mbs $out.guest "bench $dir .* bytes in")"
}

r=1
while [ $r -le "$RUNS" ]; do
  for dir in $DIRS; do
    for vmm in $VMMS; do one $vmm $dir $r; done
  done
  if [ "${LIMIT:-1}" = 1 ]; then
    for chunk in $PKT 65536; do
      name=limit
      [ $chunk = $PKT ] || name=limit64k
      echo "=== begin $name tx $r"
      t0=$(now)
      $VB copy $MIB $chunk >$LOG/$name-$r 2>&1
      cat $LOG/$name-$r
      echo "result $name tx $r host $(mbs $LOG/$name-$r '^copy: ') guest - status 0 t $t0 $(now)"
    done
  fi
  r=$((r + 1))
done
echo "=== done"
