#!/usr/bin/env bash
# bench/gpu: virtio-gpu 2D frames per second, kindling vs QEMU
# (virtio-gpu-device on microvm, -display none), the same guest
# (tests/guests/virtio_gpu.c with gpu.bench_frames=N): N frames of a
# full-screen TRANSFER_TO_HOST_2D + RESOURCE_FLUSH at W x H (default
# 1920x1080, 4 bytes a pixel), timed by the guest. Runs are interleaved.
# With /dev/kvm the VMMs run on this host; without it (or with --nested)
# both run inside tools/nested-kvm (QEMU/TCG L1 with kvm-amd): then only the
# ratio means something. --3d: the virgl clear + readback loop instead
# (gpu.bench3d_frames=N: N fenced clears of a W x H render target, each
# read back fenced), kindling --gpu virgl (virtio-pci) against QEMU's
# virtio-gpu-gl-pci with -display egl-headless, both on llvmpipe
# (LIBGL_ALWAYS_SOFTWARE=1).
# The last line is `gpu_ratio <kindling / QEMU fps>` (medians).
#
# Usage: bench/gpu/run.sh [--3d] [--runs N] [--frames N] [--size WxH] [--nested]
#                         [--keep DIR] [--kindling PATH] [--guest PATH]
# Needs an optimised kindling:
#   bazel build --config=bench //launcher:kindling //launcher:kindling-gpu \
#     //tests/guests:virtio_gpu.elf
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KINDLING=$ROOT/bazel-bin/launcher/kindling
GUEST=$ROOT/bazel-bin/tests/guests/virtio_gpu.elf
runs=3 frames=200 w=1920 h=1080 nested=0 keep= mode=2d
while (($#)); do
  case $1 in
    --3d) mode=3d; shift ;;
    --runs) runs=$2; shift 2 ;;
    --frames) frames=$2; shift 2 ;;
    --size) w=${2%x*} h=${2#*x}; shift 2 ;;
    --nested) nested=1; shift ;;
    --keep) keep=$2; shift 2 ;;
    --kindling) KINDLING=$2; shift 2 ;;
    --guest) GUEST=$2; shift 2 ;;
    *) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
source "$ROOT/bench/lib.sh"
for f in "$KINDLING" "$GUEST"; do
  [[ -f $f ]] || { echo "bench/gpu: $f missing (bazel build --config=bench //launcher:kindling //tests/guests:virtio_gpu.elf)"; exit 2; }
done
KINDLING=$(realpath "$KINDLING") GUEST=$(realpath "$GUEST")
[[ $KINDLING == *fastbuild* ]] && echo "bench/gpu: WARNING: $KINDLING is a fastbuild (-O0) binary"
qemu=$(command -v qemu-system-x86_64) || { echo "bench/gpu: qemu-system-x86_64 is not installed"; exit 2; }
work=$(mktemp -d /tmp/bench-gpu.XXXXXX)
[[ -n $keep ]] || trap 'rm -rf "$work"' EXIT
cp "$ROOT/bench/gpu/cases.sh" "$ROOT/bench/cases_lib.sh" "$work/"
"$ROOT/bench/monitor.sh" $$ "$work/monitor.log" &
monitor=$!
[[ -w /dev/kvm ]] || nested=1

if ((nested)); then
  where="nested KVM (tools/nested-kvm: QEMU/TCG L1, kvm-amd; both VMMs inside L1): compare the ratio, not the absolute figures"
  bench_firmware "$work/fw"
  # Debian builds QEMU's virtio-gpu as a module: it comes along, and
  # QEMU_MODULE_DIR points there.
  qmods=(hw-display-virtio-gpu.so)
  extra=()
  if [[ $mode == 3d ]]; then
    qmods+=(hw-display-virtio-gpu-gl.so hw-display-virtio-gpu-pci.so hw-display-virtio-gpu-pci-gl.so
            ui-egl-headless.so ui-opengl.so)
    # QEMU's egl-headless goes through GBM, whose loader wants kms_swrast.
    extra=(--bin "$(dirname "$KINDLING")/kindling-gpu" --gl
           --lib /usr/lib/x86_64-linux-gnu/dri/kms_swrast_dri.so)
  fi
  for m in "${qmods[@]}"; do
    [[ -f /usr/lib/x86_64-linux-gnu/qemu/$m ]] || { echo "bench/gpu: QEMU module $m missing"; exit 2; }
    extra+=(--bin "/usr/lib/x86_64-linux-gnu/qemu/$m")
  done
  echo "QEMU_MODULE_DIR=\$PWD MODE=$mode K=./kindling Q=./qemu-system-x86_64 QFW=fw G=virtio_gpu.elf RUNS=$runs FRAMES=$frames W=$w H=$h LOG=/tmp sh cases.sh" >"$work/go.sh"
  t0=$(bench_secs)
  "$ROOT/tools/nested-kvm/run.sh" --mem 3072 --cpus 2 --timeout 1800 "${extra[@]}" \
    --bin "$KINDLING" --bin "$qemu" --file "$GUEST" --file "$work/fw:fw" \
    --file "$work/cases.sh" --file "$work/cases_lib.sh" --file "$work/go.sh" -- sh go.sh \
    >"$work/out" 2>"$work/err"
  rc=$?
  t1=$(bench_secs)
  tr -d '\r' <"$work/out" >"$work/log"
  if ((rc != 0)) || ! grep -q '^=== done' "$work/log"; then
    echo "bench/gpu: nested run failed ($rc)"; tail -20 "$work/log" "$work/err"; exit 1
  fi
else
  where="this host's /dev/kvm ($([[ -d /sys/module/kvm_pvm ]] && echo kvm_pvm || echo kvm))"
  t0=$(bench_secs)
  (cd "$work" && MODE=$mode K=$KINDLING Q=$qemu QFW= G=$GUEST RUNS=$runs FRAMES=$frames W=$w \
    H=$h LOG=$work LIBGL_ALWAYS_SOFTWARE=1 sh cases.sh) >"$work/log" 2>&1
  t1=$(bench_secs)
fi
kill $monitor 2>/dev/null
wait $monitor 2>/dev/null
[[ -n $keep ]] && { mkdir -p "$keep" && cp -r "$work"/. "$keep"/; }

echo "bench/gpu: $(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r); $where"
echo "bench/gpu: $mode, $runs runs interleaved, $frames frames of ${w}x${h} each; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-9s %-28s %8s\n' vmm "fps per run" median
declare -A med
failed=0
for vmm in kindling qemu; do
  want=0
  [[ $vmm == qemu ]] && want=1
  figs=""
  while read -r _ v _ r _ fps _ st _; do
    if [[ $st != "$want" || $fps == - ]]; then echo "bench/gpu: $v run $r failed (status $st)"; failed=1; continue; fi
    figs+=" $fps"
  done < <(grep "^result $vmm $mode " "$work/log")
  med[$vmm]=$(bench_median <<<"$figs")
  printf '%-9s %-28s %8s\n' "$vmm" "${figs# }" "${med[$vmm]}"
done
echo "bench/gpu: other work above 20% CPU during the runs: $(bench_others "$t0" "$t1")"
k=${med[kindling]} q=${med[qemu]}
if [[ $k == - || $q == - ]]; then echo "bench/gpu: no figures"; exit 1; fi
awk -v k="$k" -v q="$q" 'BEGIN {printf "gpu_ratio %.3f\n", k / q}'
exit $failed
