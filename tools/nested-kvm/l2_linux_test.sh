#!/usr/bin/env bash
# Bazel test: Debian's stock kernel reaches userspace as an L2 guest.
set -uo pipefail
outcome=$(mktemp)
trap 'rm -f "$outcome"' EXIT
out=$("$(dirname "$0")/l2_linux_demo.sh" --outcome "$outcome")
rc=$?
echo "$out"
[[ $(cat "$outcome") == skip* ]] && exit 0  # printed `SKIP: <reason>`
[[ $rc -eq 0 ]] || { echo "FAIL: exited $rc"; exit 1; }
grep -q '^L2 userspace up' <<<"$out" || { echo "FAIL: L2 never reached userspace"; exit 1; }
