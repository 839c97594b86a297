#!/usr/bin/env bash
# Builds every fuzz target in targets.txt with clang's libFuzzer plus
# AddressSanitizer/UBSan and runs each for FUZZ_SECONDS (default 20).
# Appends `PASS|FAIL|SKIP fuzz:<name> ...` lines to the results file given
# as $1 (read by tools/ci/summarize.py). FUZZ_ONLY=REGEX limits the targets.
# FUZZ_JOBS (default: the number of CPUs) compiles and fuzzes that many at
# once; each fuzzer is one process, so every target still gets its seconds
# of a whole CPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
results=${1:-/dev/stdout}
seconds=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-$(nproc)}
work=${FUZZ_WORKDIR:-$(mktemp -d)}
mkdir -p "$work/include" "$work/obj"
ln -sfn "$PWD/tools/cc" "$work/include/kindling"  # <kindling/status_macros.h>

if ! command -v clang++ >/dev/null; then
  # tools/setup.sh installs clang: under CI=true its absence fails.
  word=SKIP
  [[ ${CI:-} == true ]] && word=FAIL
  echo "$word fuzz: clang++ is not installed" >>"$results"
  exit 0
fi

# targets.txt names protoc's output under bazel-bin: make it there, in the
# default configuration (an ASan build before this one points bazel-bin at
# its own tree, which holds only what its tests needed).
if ! bazel build //api:kindling_v1_cc_gen //libs/migration:snapshot_proto_gen \
    //libs/vcpu:cpu_profile_proto_gen //tests/guests:hello.elf //tests/guests:hello32.elf \
    //tests/guests:smp.elf >"$work/protoc.log" 2>&1; then
  echo "FAIL fuzz: generating the protobuf sources failed: $(tail -n 3 "$work/protoc.log" | tr '\n' ' ')" \
    >>"$results"
  exit 0
fi

names=() srcs_of=() mods_of=() seeds_of=()
while IFS='|' read -r name srcs incs mods seeds; do
  name=$(echo "$name" | xargs)
  [[ -z "$name" || "$name" == \#* ]] && continue
  # FUZZ_ONLY=regex: just the targets whose name matches (by hand; CI runs all).
  [[ -n ${FUZZ_ONLY:-} && ! $name =~ $FUZZ_ONLY ]] && continue
  names+=("$name")
  # shellcheck disable=SC2086
  srcs_of+=("$(ls $srcs | grep -vE '(_test|test_util)\.cc$' | tr '\n' ' ')")
  mods_of+=("$mods")
  seeds_of+=("${seeds:-}")
done <tools/fuzz/targets.txt

# Every target compiles with the union of all include directories, so a
# source shared by several targets (libs/block/src/*.cc, vm-memory) is
# compiled once, into $work/obj/<path>.o (its errors beside it, .log).
inc_flags=" -I$work/include"
for d in $(grep -v '^#' tools/fuzz/targets.txt | cut -d'|' -f3 | tr ' ' '\n' | sort -u); do
  inc_flags+=" -I$d"
done
export FUZZ_CFLAGS="-std=c++20 -O1 -gline-tables-only -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined $inc_flags"
export FUZZ_OBJ="$work/obj"
obj_of() { echo "$work/obj/$(echo "$1" | tr '/' '_').o"; }
echo "fuzz: compiling $(printf '%s\n' ${srcs_of[@]+"${srcs_of[@]}"} | tr ' ' '\n' | grep -c .) sources, $jobs at a time"
# shellcheck disable=SC2016
printf '%s\n' ${srcs_of[@]+"${srcs_of[@]}"} | tr ' ' '\n' | grep . | sort -u |
  xargs -P "$jobs" -I{} bash -c '
    obj="$FUZZ_OBJ/$(echo "$1" | tr / _).o"
    [[ -f $obj ]] && exit 0
    clang++ $FUZZ_CFLAGS -c "$1" -o "$obj.tmp" 2>"$obj.log" && mv "$obj.tmp" "$obj"
    exit 0' _ {}

# fuzz_one I: links target I and fuzzes it; its result line goes to
# $work/<name>.result.
fuzz_one() {
  local name=${names[$1]} objs="" src o bin="$work/${names[$1]}"
  local out="$work/$name.result" why=""
  for src in ${srcs_of[$1]}; do
    o=$(obj_of "$src")
    if [[ ! -f $o ]]; then why=$(head -c 300 "$o.log" 2>/dev/null); break; fi
    objs+=" $o"
  done
  # shellcheck disable=SC2086
  if [[ -n $why ]] || ! clang++ -fsanitize=fuzzer,address,undefined $objs -o "$bin" \
      $(pkg-config --libs ${mods_of[$1]}) 2>"$work/$name.link.log"; then
    [[ -n $why ]] || why=$(head -c 300 "$work/$name.link.log")
    echo "FAIL fuzz:$name (build failed: $why)" >"$out"
    return
  fi
  mkdir -p "$work/$name.corpus"
  for seed in ${seeds_of[$1]}; do [[ -f $seed ]] && cp "$seed" "$work/$name.corpus/"; done
  echo "fuzz: running $name for ${seconds}s"
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 "$work/$name.corpus" >"$work/$name.log" 2>&1; then
    echo "PASS fuzz:$name ($(grep -o 'stat::number_of_executed_units: [0-9]*' "$work/$name.log"))" >"$out"
  else
    echo "FAIL fuzz:$name (see its log above)" >"$out"
  fi
}

running=0
for i in "${!names[@]}"; do
  if ((running >= jobs)); then wait -n; running=$((running - 1)); fi
  fuzz_one "$i" &
  running=$((running + 1))
done
wait

for name in ${names[@]+"${names[@]}"}; do
  if [[ ! -f $work/$name.result ]]; then
    echo "FAIL fuzz:$name (it gave no result)" >>"$results"
    continue
  fi
  if grep -q '^FAIL.*see its log' "$work/$name.result"; then
    echo "--- fuzz:$name"; tail -n 30 "$work/$name.log"
  fi
  cat "$work/$name.result" >>"$results"
done
