#!/usr/bin/env bash
# Builds every fuzz target in targets.txt with clang's libFuzzer plus
# AddressSanitizer/UBSan and runs each for FUZZ_SECONDS (default 20).
# Appends `PASS|FAIL|SKIP fuzz:<name> ...` lines to the results file given
# as $1 (read by tools/ci/summarize.py). FUZZ_ONLY=REGEX limits the targets.
set -uo pipefail
cd "$(dirname "$0")/../.."
results=${1:-/dev/stdout}
seconds=${FUZZ_SECONDS:-20}
work=${FUZZ_WORKDIR:-$(mktemp -d)}
mkdir -p "$work/include"
ln -sfn "$PWD/tools/cc" "$work/include/kindling"  # <kindling/status_macros.h>

if ! command -v clang++ >/dev/null; then
  # tools/setup.sh installs clang: under CI=true its absence fails.
  word=SKIP
  [[ ${CI:-} == true ]] && word=FAIL
  echo "$word fuzz: clang++ is not installed" >>"$results"
  exit 0
fi

# Every target compiles with the union of all include directories, so a
# source shared by several targets (libs/block/src/*.cc, vm-memory) is
# compiled once: objects are cached by path under $work/obj.
inc_flags=" -I$work/include"
for d in $(grep -v '^#' tools/fuzz/targets.txt | cut -d'|' -f3 | tr ' ' '\n' | sort -u); do
  inc_flags+=" -I$d"
done
cflags="-std=c++20 -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
mkdir -p "$work/obj"

# compile SRC: prints the object file, compiling it on first use.
compile() {
  local obj
  obj="$work/obj/$(echo "$1" | tr '/' '_').o"
  if [[ ! -f $obj ]]; then
    # shellcheck disable=SC2086
    clang++ $cflags $inc_flags -c "$1" -o "$obj.tmp" 2>>"$work/compile.log" || return 1
    mv "$obj.tmp" "$obj"
  fi
  echo "$obj"
}

while IFS='|' read -r name srcs incs mods seeds; do
  name=$(echo "$name" | xargs)
  [[ -z "$name" || "$name" == \#* ]] && continue
  # FUZZ_ONLY=regex: just the targets whose name matches (by hand; CI runs all).
  [[ -n ${FUZZ_ONLY:-} && ! $name =~ $FUZZ_ONLY ]] && continue
  # shellcheck disable=SC2086
  srcs=$(ls $srcs | grep -vE '(_test|test_util)\.cc$' | tr '\n' ' ')
  bin="$work/$name"
  echo "fuzz: building $name"
  objs="" ok=1
  : >"$work/compile.log"
  for src in $srcs; do
    o=$(compile "$src") || { ok=0; break; }
    objs+=" $o"
  done
  # shellcheck disable=SC2086
  if ((!ok)) || ! clang++ -fsanitize=fuzzer,address,undefined $objs -o "$bin" \
      $(pkg-config --libs $mods) 2>>"$work/compile.log"; then
    echo "FAIL fuzz:$name (build failed: $(head -c 300 "$work/compile.log"))" >>"$results"
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
