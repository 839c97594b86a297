#!/usr/bin/env bash
# Runs end-to-end test targets ROUNDS times in a row, each round a fresh
# `bazel test --nocache_test_results`, to find flakes. A round is clean
# when every target passed; the log of each failed target is kept under
# OUT/round-N/. Last line: `e2e loop: C of R rounds clean`.
#
#   tools/ci/e2e_loop.sh ROUNDS OUT [TARGET ...]   (default: //tests/e2e/...)
#
# Not part of tools/test.sh (20 rounds take far longer than a CI run);
# docs/benchmarks.md records what a loop found.
set -uo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:?usage: e2e_loop.sh ROUNDS OUT [TARGET ...]}
out=${2:?usage: e2e_loop.sh ROUNDS OUT [TARGET ...]}
shift 2
targets=("$@")
((${#targets[@]})) || targets=(//tests/e2e/...)
mkdir -p "$out"
testlogs=$(bazel info bazel-testlogs 2>/dev/null)
clean=0
for ((r = 1; r <= rounds; r++)); do
  start=$(date +%s)
  bazel test --nocache_test_results -k "${targets[@]}" >"$out/round-$r.log" 2>&1
  rc=$?
  failed=$(grep -E '^//[^ ]+ +(FAILED|TIMEOUT|NO STATUS)' "$out/round-$r.log" | awk '{print $1}')
  if ((rc == 0)) && [[ -z $failed ]]; then
    clean=$((clean + 1))
    echo "round $r: clean ($(($(date +%s) - start)) s)"
    continue
  fi
  echo "round $r: NOT clean (bazel rc=$rc):" $failed
  mkdir -p "$out/round-$r"
  for t in $failed; do
    p=${t#//}
    p=${p/://}
    cp -r "$testlogs/$p" "$out/round-$r/$(basename "$p")" 2>/dev/null
  done
done
echo "e2e loop: $clean of $rounds rounds clean"
