#!/usr/bin/env bash
# Bazel test: Debian's stock kernel reaches userspace as an L2 guest.
set -uo pipefail
out=$("$(dirname "$0")/l2_linux_demo.sh")
rc=$?
echo "$out"
case $rc in
  0) grep -q '^L2 userspace up' <<<"$out" || { echo "FAIL: L2 never reached userspace"; exit 1; } ;;
  77) exit 0 ;;  # printed `SKIP: <reason>`
  *) echo "FAIL: exited $rc"; exit 1 ;;
esac
