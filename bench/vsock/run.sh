#!/usr/bin/env bash
# bench/vsock: virtio-vsock stream throughput, kindling vs QEMU, same guest
# (tests/guests/virtio_vsock.c in its bench modes).
#
#   guest -> host (tx): one stream connection to host port 5201; the guest
#       sends --mib MiB in --pkt-byte packets as fast as the host's credit
#       allows (transmit ring kept full, polled from ring 3, interrupts
#       suppressed). The host side times first byte -> EOF: that is the
#       figure (the guest's own rate is the cross-check).
#   host -> guest (rx): the host writes --mib MiB into a connection to the
#       guest's port 5202; the guest's count is the figure.
#   limit: the same bytes through a Unix socket pair on the host, --pkt
#       bytes per write (one guest packet per write); limit64k: 64 KiB per
#       write (kindling writes the packets that queued up meanwhile in one
#       go, at most its 64 KiB credit window, so it can pass "limit").
#
# kindling bridges vsock to Unix sockets (Firecracker's convention), and
# kindling-vhost and QEMU both use the host kernel's vhost-vsock
# (/dev/vhost-vsock; the line before the last is their ratio,
# vsock_vhost_ratio). Where the host
# has /dev/kvm and /dev/vhost-vsock, both run here. Otherwise (or with
# --nested) the comparison runs inside tools/nested-kvm (QEMU/TCG L1 with
# kvm-amd and vhost_vsock loaded; both VMMs in that L1): only the ratio
# means something there. Where the host has /dev/kvm but no vhost-vsock,
# kindling (and the limit) are measured on the host as well ("direct",
# kindling only), unless --no-direct.
# Prints tables; the last line is `vsock_ratio <kindling / QEMU tx MB/s>`
# (medians, host-side figures, from the comparison).
#
# Usage: bench/vsock/run.sh [--runs N] [--mib N] [--nested-mib N] [--pkt N]
#                           [--tx-only] [--nested] [--no-direct] [--keep DIR]
#                           [--kindling PATH] [--guest PATH]
# Needs an optimised kindling:
#   bazel build --config=bench //launcher:kindling //tests/guests:virtio_vsock.elf
# qemu-system-x86_64 and gcc; tools/nested-kvm's requirements for --nested.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KINDLING=$ROOT/bazel-bin/launcher/kindling
GUEST=$ROOT/bazel-bin/tests/guests/virtio_vsock.elf
runs=3 mib=512 nmib=32 pkt=4096 dirs="tx rx" nested=0 direct=1 keep=
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --mib) mib=$2; shift 2 ;;
    --nested-mib) nmib=$2; shift 2 ;;
    --pkt) pkt=$2; shift 2 ;;
    --tx-only) dirs=tx; shift ;;
    --nested) nested=1; shift ;;
    --no-direct) direct=0; shift ;;
    --keep) keep=$2; shift 2 ;;
    --kindling) KINDLING=$2; shift 2 ;;
    --guest) GUEST=$2; shift 2 ;;
    *) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
source "$ROOT/bench/lib.sh"
bench_setup vsock vsockbench "--config=bench //launcher:kindling //tests/guests:virtio_vsock.elf"
kvm=0
[[ -w /dev/kvm ]] && kvm=1
[[ $kvm == 1 && -w /dev/vhost-vsock ]] || nested=1
kind="kvm"
[[ -d /sys/module/kvm_pvm ]] && kind="kvm_pvm"

ok_status() { [[ $1 == kindling* && $2 == 0 ]] || [[ $1 == qemu && $2 == 1 ]] || [[ $1 == limit* ]]; }
failed=0
declare -A med
table() {  # LOG VMMS TITLE KEY MARK(1: star runs with other work)
  echo "bench/vsock: $3"
  printf '%-4s %-14s %-11s %-32s %8s %12s\n' dir vmm figure "MB/s per run" median cross-check
  for dir in $dirs; do
    for vmm in $2 limit limit64k; do
      [[ $vmm == limit* && $dir != tx ]] && continue
      local hosts="" guests="" shown="" fig cross label m mark
      while read -r _ v d r _ h _ g _ st _ t0 t1; do
        if ! ok_status "$v" "$st"; then echo "bench/vsock: $v $d run $r failed (status $st)"; failed=1; continue; fi
        hosts+=" $h" guests+=" $g"
        mark=""
        [[ $5 == 1 ]] && mark=$(bench_busy "$t0" "$t1")
        if [[ $dir == tx || $v == limit* ]]; then shown+=" $h$mark"; else shown+=" $g$mark"; fi
      done < <(grep "^result $vmm $dir " "$1")
      if [[ $dir == tx || $vmm == limit* ]]; then fig=$hosts cross=$guests label="host recv"
      else fig=$guests cross=$hosts label="guest recv"; fi
      m=$(bench_median <<<"$fig")
      med[$4-$vmm-$dir]=$m
      printf '%-4s %-14s %-11s %-32s %8s %12s\n' "$dir" "$vmm" "$label" "${shown# }" "$m" "$(bench_median <<<"$cross")"
    done
  done
  grep '^retry ' "$1" | sed 's/^/bench\/vsock: /'
}

echo "bench/vsock: $(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r), /dev/kvm: $([[ $kvm == 1 ]] && echo $kind || echo none), /dev/vhost-vsock: $([[ -e /dev/vhost-vsock ]] && echo yes || echo no)"
echo "bench/vsock: $runs runs interleaved, $pkt-byte packets; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

if ((nested)); then
  bench_firmware "$work/fw"
  cat >"$work/go.sh" <<EOF
K=./kindling Q=./qemu-system-x86_64 QFW=fw G=virtio_vsock.elf VB=./vsockbench RUNS=$runs MIB=$nmib PKT=$pkt DIRS="$dirs" VMMS="kindling kindling-vhost qemu" LIMIT=1 LOG=/tmp sh cases.sh
EOF
  nested_t0=$(bench_secs)
  "$ROOT/tools/nested-kvm/run.sh" --mem 2048 --cpus 2 --timeout 3000 --module vhost_vsock \
    --bin "$KINDLING" --bin "$qemu" --bin "$work/vsockbench" --file "$GUEST" \
    --file "$work/fw:fw" --file "$work/cases.sh" --file "$work/cases_lib.sh" --file "$work/go.sh" -- sh go.sh \
    >"$work/nested.out" 2>"$work/nested.err"
  rc=$?
  nested_t1=$(bench_secs)
  tr -d '\r' <"$work/nested.out" >"$work/nested.log"
  if ((rc != 0)) || ! grep -q '^=== done' "$work/nested.log"; then
    echo "bench/vsock: nested run failed ($rc)"; tail -20 "$work/nested.log" "$work/nested.err"; failed=1
  else
    table "$work/nested.log" "kindling kindling-vhost qemu" "comparison inside nested KVM (tools/nested-kvm: QEMU/TCG L1, 2 vCPUs, kvm-amd + vhost_vsock; both VMMs in L1), $nmib MiB per run: compare the ratio, not the absolute figures" cmp 0
    o=$(bench_others "$nested_t0" "$nested_t1")
    echo "bench/vsock: other work above 20% CPU during the nested run: ${o:-none seen}"
  fi
fi
if ((direct && kvm)); then
  vmms="kindling"
  ((nested)) || vmms="kindling kindling-vhost qemu"
  mkdir -p "$work/direct"
  direct_t0=$(bench_secs)
  (cd "$work/direct" && K=$KINDLING Q=$qemu QFW= G=$GUEST VB=$work/vsockbench RUNS=$runs MIB=$mib PKT=$pkt \
    DIRS="$dirs" VMMS="$vmms" LIMIT=1 LOG=$work/direct sh "$work/cases.sh") >"$work/direct.log" 2>&1
  title="on this host's /dev/kvm ($kind), $mib MiB per run"
  ((nested)) && title+=", kindling only (no /dev/vhost-vsock here for QEMU)"
  if ((nested)); then table "$work/direct.log" "$vmms" "$title" direct 1
  else table "$work/direct.log" "$vmms" "$title" cmp 1; fi
  o=$(bench_others "$direct_t0" "$(bench_secs)")
  echo "bench/vsock: other work above 20% CPU during these runs: ${o:+$o; * = seen during that run}${o:-none seen}"
fi
kill $monitor 2>/dev/null
wait $monitor 2>/dev/null
[[ -n $keep ]] && { mkdir -p "$keep" && cp -r "$work"/. "$keep"/; }
echo "(cross-check: tx = the guest's own rate, TSC over kvmclock; rx = the rate the host's writer saw, until the guest closed; limit: a Unix socket pair, $pkt / 64 KiB per write)"
k=${med[cmp-kindling-tx]:--} q=${med[cmp-qemu-tx]:--} kv=${med[cmp-kindling-vhost-tx]:--}
# Both on the kernel's vhost-vsock data path: what kindling's device side
# (rings handed over, kicks and calls through its loop) costs against QEMU's.
[[ $kv != - && $q != - ]] && awk -v k="$kv" -v q="$q" 'BEGIN {printf "vsock_vhost_ratio %.3f (kindling-vhost / QEMU tx)\n", k / q}'
if [[ $k == - || $q == - ]]; then echo "bench/vsock: no kindling/QEMU tx comparison"; exit 1; fi
awk -v k="$k" -v q="$q" 'BEGIN {printf "vsock_ratio %.3f\n", k / q}'
exit $failed
