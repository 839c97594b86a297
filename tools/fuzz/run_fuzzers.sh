#!/usr/bin/env bash
# Builds every fuzz target in targets.txt with clang's libFuzzer plus
# AddressSanitizer/UBSan and runs each for FUZZ_SECONDS (default 20).
# Appends `PASS|FAIL|SKIP fuzz:<name> ...` lines to the results file given
# as $1 (read by tools/ci/summarize.py).
set -uo pipefail
cd "$(dirname "$0")/../.."
results=${1:-/dev/stdout}
seconds=${FUZZ_SECONDS:-20}
work=${FUZZ_WORKDIR:-$(mktemp -d)}
mkdir -p "$work/include"
ln -sfn "$PWD/tools/cc" "$work/include/kindling"  # <kindling/status_macros.h>

if ! command -v clang++ >/dev/null; then
  echo "SKIP fuzz: clang++ is not installed" >>"$results"
  exit 0
fi

while IFS='|' read -r name srcs incs mods seeds; do
  name=$(echo "$name" | xargs)
  [[ -z "$name" || "$name" == \#* ]] && continue
  # shellcheck disable=SC2086
  srcs=$(ls $srcs | grep -vE '(_test|test_util)\.cc$' | tr '\n' ' ')
  inc_flags=""
  for d in $incs; do inc_flags+=" -I$d"; done
  inc_flags+=" -I$work/include"
  bin="$work/$name"
  echo "fuzz: building $name"
  # shellcheck disable=SC2086
  if ! clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined \
      -fno-sanitize-recover=undefined $inc_flags \
      $srcs -o "$bin" $(pkg-config --libs $mods) 2>"$work/$name.build.log"; then
    echo "FAIL fuzz:$name (build failed: $(head -c 300 "$work/$name.build.log"))" >>"$results"
    continue
  fi
  mkdir -p "$work/$name.corpus"
  # shellcheck disable=SC2086
  for seed in ${seeds:-}; do [[ -f $seed ]] && cp "$seed" "$work/$name.corpus/"; done
  echo "fuzz: running $name for ${seconds}s"
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 "$work/$name.corpus" >"$work/$name.log" 2>&1; then
    echo "PASS fuzz:$name ($(grep -o 'stat::number_of_executed_units: [0-9]*' "$work/$name.log"))" >>"$results"
  else
    tail -n 30 "$work/$name.log"
    echo "FAIL fuzz:$name (see crash above)" >>"$results"
  fi
done <tools/fuzz/targets.txt
