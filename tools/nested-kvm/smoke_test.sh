#!/usr/bin/env bash
# Bazel test: tools/nested-kvm/run.sh boots its L1 guest and kvm_smoke passes
# inside it (real-mode and long-mode guests, exits, binary stats, PV CPUID).
set -uo pipefail
dir=$(dirname "$0")
outcome=$(mktemp)
trap 'rm -f "$outcome"' EXIT
out=$("$dir/run" --outcome "$outcome" --timeout 50 --bin "$dir/kvm_smoke" -- ./kvm_smoke --caps)
rc=$?
echo "$out"
[[ $(cat "$outcome") == skip* ]] && exit 0  # run.sh printed `SKIP: <reason>`
[[ $rc -eq 0 ]] || { echo "FAIL: run.sh exited $rc"; exit 1; }
grep -q '^kvm_smoke: all passed' <<<"$out" || { echo "FAIL: no pass line"; exit 1; }
