#!/usr/bin/env bash
# Sets everything up, builds, and runs every kindling test.
# Last line: `N passed, N failed, N skipped`. Exit status 0 iff none failed.
set -uo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bazel test //... -k --test_output=errors 2>&1 | tee "$out/bazel.log"
# The guest- and image-facing parsers once more under AddressSanitizer and
# UBSan, and kindling itself with every virtio device, through to teardown
# after a guest reboot (stock Linux); each target's result goes into the
# summary as `asan:<target>`.
bazel test --config=asan -k --test_output=errors //libs/block/... //libs/vm-memory/... //libs/vcpu/... //libs/virtio/... \
  //tests/e2e:virtio_test //tests/e2e:linux_virtio_test \
  2>&1 | tee "$out/asan.log" | tail -n 25
sed -nE 's#^(//[^ ]+) +(\(cached\) )?(PASSED|FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD).*#\3 asan:\1#p' \
  "$out/asan.log" | sed -E 's/^PASSED/PASS/; s/^(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)/FAIL/' \
  >>"$out/extra.txt"
# Coverage-guided fuzzing with libFuzzer for a short budget per target.
FUZZ_SECONDS=${FUZZ_SECONDS:-15} ./tools/fuzz/run_fuzzers.sh "$out/extra.txt" \
  2>&1 | tail -n 40
testlogs=$(bazel info bazel-testlogs 2>/dev/null)  # the default config's
bazel shutdown >/dev/null 2>&1
python3 tools/ci/summarize.py "$out/bazel.log" "$testlogs" "$out/extra.txt"
