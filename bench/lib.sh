# Shared by bench/net/run.sh and bench/vsock/run.sh (bash).
#
#   source "$ROOT/bench/lib.sh"
#   bench_setup vsock vsockbench "--config=bench //launcher:kindling ..."
#   t0=$(bench_secs); ...; t1=$(bench_secs)
#   mark=$(bench_busy "$t0" "$t1")       # "*" if other work ran meanwhile
#   echo "other work: $(bench_others "$t0" "$t1")"
#   m=$(bench_median <<<"1.5 2.5 9")    # 2.5; "-" for no numbers
#   bench_firmware "$work/fw"           # QEMU's microvm firmware, for nested runs

# Seconds since midnight, this machine's clock (bench/monitor.sh's unit).
bench_secs() { date +%H:%M:%S | awk -F: '{print $1 * 3600 + $2 * 60 + $3}'; }

# Was other work (bench/monitor.sh) seen between T0 and T1? Prints "*".
bench_busy() { awk -v a="$1" -v b="$2" '$1 >= a && $1 <= b {print "*"; exit}' "$work/monitor.log"; }

# The commands bench/monitor.sh saw between T0 and T1, most often first.
bench_others() {
  awk -v a="$1" -v b="$2" '$1 >= a && $1 <= b {print $4}' "$work/monitor.log" | sort | uniq -c |
    sort -rn | head -5 | awk '{printf "%s%s (%d samples)", (NR > 1 ? ", " : ""), $2, $1}'
}

# The median of the numbers on stdin (space or newline separated).
bench_median() {
  tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g |
    awk '{v[NR]=$1} END {if (!NR) print "-"; else if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'
}

# Copies QEMU 7.2's microvm firmware (SeaBIOS for microvm, qboot) and
# q35's (SeaBIOS, the -kernel option ROMs) to DIR, for a QEMU run inside
# tools/nested-kvm (-L DIR).
bench_firmware() {
  mkdir -p "$1" && cp -L /usr/share/qemu/bios-microvm.bin /usr/share/qemu/qboot.rom "$1/" &&
    cp -L /usr/share/seabios/bios-256k.bin /usr/share/qemu/kvmvapic.bin \
      /usr/share/qemu/linuxboot_dma.bin /usr/share/qemu/pvh.bin "$1/"  # q35 (bench/gpu --3d)
}

# bench_setup NAME TOOL BUILD_HINT: the common start of a bench/NAME/run.sh
# once its options are parsed. Checks $KINDLING and $GUEST (made absolute:
# the cases run in another directory) and QEMU (sets $qemu); makes $work
# (removed on exit unless $keep is set); builds bench/NAME/TOOL.c there and
# copies cases.sh and cases_lib.sh beside it; starts bench/monitor.sh
# ($monitor, logging to $work/monitor.log). Exits 2 on what is missing.
bench_setup() {
  local name=$1 tool=$2 hint=$3 f
  for f in "$KINDLING" "$GUEST"; do
    [[ -f $f ]] || { echo "bench/$name: $f missing (bazel build $hint)"; exit 2; }
  done
  KINDLING=$(realpath "$KINDLING") GUEST=$(realpath "$GUEST")
  [[ $KINDLING == *fastbuild* ]] &&
    echo "bench/$name: WARNING: $KINDLING is a fastbuild (-O0) binary; build with --config=bench"
  qemu=$(command -v qemu-system-x86_64) || { echo "bench/$name: qemu-system-x86_64 is not installed"; exit 2; }
  work=$(mktemp -d "/tmp/bench-$name.XXXXXX")
  [[ -n ${keep:-} ]] || trap 'rm -rf "$work"' EXIT
  gcc -O2 -static -o "$work/$tool" "$ROOT/bench/$name/$tool.c" 2>"$work/gcc.log" ||
    { cat "$work/gcc.log"; exit 2; }
  cp "$ROOT/bench/$name/cases.sh" "$ROOT/bench/cases_lib.sh" "$work/"
  "$ROOT/bench/monitor.sh" $$ "$work/monitor.log" &
  monitor=$!
}
