#!/usr/bin/env bash
# bench/net: virtio-net throughput, kindling vs QEMU (microvm, virtio-net-device
# on a TAP, vhost=off), same guest (tests/guests/virtio_net.c in its bench
# modes), same TAP setup.
#
#   guest -> host (tx): the guest sends UDP datagrams (1472-byte payload,
#       1514-byte frames) to 10.0.2.2:5001 for SECS seconds, keeping its
#       transmit ring full and polling (ring 3, interrupts suppressed);
#       a UDP socket on the host counts what arrives: that is the figure.
#       The guest's own count (TSC, kvmclock-calibrated) is the cross-check.
#   host -> guest (rx): netbench sends datagrams to the guest's port 5001
#       for SECS+1 seconds as fast as the TAP takes them; the guest counts
#       what it receives over SECS seconds: that is the figure (the host's
#       offered rate is the cross-check).
#   limit: netbench itself writes the same frames into a TAP (one write per
#       frame with a virtio-net header, as a VMM does) to the same UDP
#       socket: the most a one-thread VMM could deliver on this host.
#
# Runs are interleaved (kindling, QEMU, limit; then again). Both guests
# negotiate EVENT_IDX; kindling offers no MRG_RXBUF, QEMU does (negotiated).
# With /dev/kvm the VMMs run on this host, each run in a network namespace
# of its own; without it (or with --nested) everything runs inside
# tools/nested-kvm (QEMU/TCG L1 with kvm-amd): then only the ratio means
# something, absolute figures are emulated hardware's.
# Prints a table; the last line is `net_ratio <kindling / QEMU tx MB/s>`
# (medians, host-side figures).
#
# Usage: bench/net/run.sh [--runs N] [--secs N] [--len BYTES] [--tx-only]
#                         [--no-limit] [--nested] [--keep DIR]
#                         [--kindling PATH] [--guest PATH]
# Needs an optimised kindling (the default fastbuild is -O0: its device
# thread then spends ~8 us of user time per frame, 13x the optimised one):
#   bazel build --config=bench //launcher:kindling //tests/guests:virtio_net.elf
# root (TAPs, namespaces); qemu-system-x86_64; gcc.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KINDLING=$ROOT/bazel-bin/launcher/kindling
GUEST=$ROOT/bazel-bin/tests/guests/virtio_net.elf
runs=3 secs=5 len=1472 dirs="tx rx" limit=1 nested=0 keep=
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --len) len=$2; shift 2 ;;
    --tx-only) dirs=tx; shift ;;
    --no-limit) limit=0; shift ;;
    --nested) nested=1; shift ;;
    --keep) keep=$2; shift 2 ;;
    --kindling) KINDLING=$2; shift 2 ;;
    --guest) GUEST=$2; shift 2 ;;
    *) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
source "$ROOT/bench/lib.sh"
bench_setup net netbench "//launcher:kindling //tests/guests:virtio_net.elf"
[[ -w /dev/kvm && -e /dev/net/tun && $(id -u) == 0 ]] || nested=1

if ((nested)); then
  where="nested KVM (tools/nested-kvm: QEMU/TCG L1, kvm-amd; both VMMs inside L1): compare the ratio, not the absolute figures"
  bench_firmware "$work/fw"
  cat >"$work/go.sh" <<EOF
K=./kindling Q=./qemu-system-x86_64 QFW=fw G=virtio_net.elf NB=./netbench RUNS=$runs SECS=$secs LEN=$len DIRS="$dirs" LIMIT=$limit LOG=/tmp sh cases.sh
EOF
  nested_t0=$(bench_secs)
  "$ROOT/tools/nested-kvm/run.sh" --mem 2048 --cpus 2 --timeout 1800 --module tun \
    --bin "$KINDLING" --bin "$qemu" --bin "$work/netbench" --file "$GUEST" \
    --file "$work/fw:fw" --file "$work/cases.sh" --file "$work/cases_lib.sh" --file "$work/go.sh" -- sh go.sh \
    >"$work/out" 2>"$work/err"
  rc=$?
  nested_t1=$(bench_secs)
  tr -d '\r' <"$work/out" >"$work/log"
  if ((rc != 0)) || ! grep -q '^=== done' "$work/log"; then
    echo "bench/net: nested run failed ($rc)"; tail -20 "$work/log" "$work/err"; exit 1
  fi
else
  where="this host's /dev/kvm ($([[ -d /sys/module/kvm_pvm ]] && echo kvm_pvm || echo kvm)), each run in its own network namespace"
  (cd "$work" && K=$KINDLING Q=$qemu QFW= G=$GUEST NB=./netbench RUNS=$runs SECS=$secs LEN=$len \
    DIRS="$dirs" LIMIT=$limit LOG=$work sh cases.sh) >"$work/log" 2>&1
fi
kill $monitor 2>/dev/null
wait $monitor 2>/dev/null
[[ -n $keep ]] && { mkdir -p "$keep" && cp -r "$work"/. "$keep"/; }

ok_status() { [[ $1 == kindling && $2 == 0 ]] || [[ $1 == qemu && $2 == 1 ]] || [[ $1 == limit ]]; }

echo "bench/net: $(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r); $where"
echo "bench/net: $runs runs interleaved, $secs s each, $len-byte UDP payload; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-4s %-9s %-12s %-32s %8s %12s\n' dir vmm figure "MB/s per run" median cross-check
declare -A med
failed=0
for dir in $dirs; do
  for vmm in kindling qemu limit; do
    [[ $vmm == limit && ($dir != tx || $limit == 0) ]] && continue
    hosts="" guests=""
    shown=""
    while read -r _ v d r _ h _ g _ st _ t0 t1; do
      if ! ok_status "$v" "$st"; then echo "bench/net: $v $d run $r failed (status $st)"; failed=1; continue; fi
      hosts+=" $h" guests+=" $g"
      mark=""
      ((nested)) || mark=$(bench_busy "$t0" "$t1")
      if [[ $dir == tx ]]; then shown+=" $h$mark"; else shown+=" $g$mark"; fi
    done < <(grep "^result $vmm $dir " "$work/log")
    if [[ $dir == tx ]]; then fig=$hosts cross=$guests label="host recv"; else fig=$guests cross=$hosts label="guest recv"; fi
    [[ $vmm == limit ]] && label="host recv"
    m=$(bench_median <<<"$fig")
    med[$vmm-$dir]=$m
    printf '%-4s %-9s %-12s %-32s %8s %12s\n' "$dir" "$vmm" "$label" "${shown# }" "$m" "$(bench_median <<<"$cross")"
  done
done
echo "(cross-check: tx = the guest's own rate, TSC over kvmclock; rx = the rate netbench offered; limit = netbench's TAP writes)"
grep '^retry ' "$work/log" | sed 's/^/bench\/net: /'
if ((nested)); then
  other=$(bench_others "$nested_t0" "$nested_t1")
else
  other=$(bench_others 0 86400)
  [[ -n $other ]] && other+="; * = seen during that run"
fi
echo "bench/net: other work above 20% CPU during the runs: ${other:-none seen}"
k=${med[kindling-tx]:--} q=${med[qemu-tx]:--}
if [[ $k == - || $q == - ]]; then echo "bench/net: no tx figures"; exit 1; fi
awk -v k="$k" -v q="$q" 'BEGIN {printf "net_ratio %.3f\n", k / q}'
exit $failed
