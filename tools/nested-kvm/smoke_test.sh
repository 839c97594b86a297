#!/usr/bin/env bash
# Bazel test: tools/nested-kvm/run.sh boots its L1 guest and kvm_smoke passes
# inside it (real-mode and long-mode guests, exits, binary stats, PV CPUID).
set -uo pipefail
dir=$(dirname "$0")
out=$("$dir/run" --timeout 50 --bin "$dir/kvm_smoke" -- ./kvm_smoke --caps)
rc=$?
echo "$out"
case $rc in
  0) grep -q '^kvm_smoke: all passed' <<<"$out" || { echo "FAIL: no pass line"; exit 1; } ;;
  77) exit 0 ;;  # run.sh printed `SKIP: <reason>`
  *) echo "FAIL: run.sh exited $rc"; exit 1 ;;
esac
