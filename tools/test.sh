#!/usr/bin/env bash
# Sets everything up, builds, and runs every kindling test.
# Last line: `N passed, N failed, N skipped`. Exit status 0 iff none failed.
#
# Stages, each counted by tools/ci/summarize.py from its own logs:
#   main   bazel test //...: unit tests, fuzz-target replays, the test
#          guests under QEMU, end-to-end tests
#   opt    the release build (-c opt) of kindling and kindling-img, which
#          then boots the hello guest (a build that fails is a failure)
#   asan   the libraries' and control plane's tests once more under
#          AddressSanitizer and UBSan, and kindling itself with every virtio
#          device, through to teardown after a guest reboot (stock Linux);
#          not the fuzz-target replays, which the fuzz stage runs under
#          ASan+UBSan with libFuzzer (seeds first, then mutations)
#   fuzz   each libFuzzer target for FUZZ_SECONDS (default 15)
# A stage that dies before it reports counts as a failure, never as fewer
# tests. Under CI=true a test that would skip for want of something
# tools/setup.sh installs fails instead.
set -uo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }
# How long each stage took, for docs/ci-stability.md's budget (45 min on
# 2 cores); printed before the summary, whose line stays the last.
timings=""
lap() { timings+="ci: stage $1 took $((SECONDS - lap_start)) s"$'\n'; lap_start=$SECONDS; }
lap_start=0
lap setup

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
stages=()

bazel test //... -k 2>&1 | tee "$out/main.log"
rc=${PIPESTATUS[0]}
stages+=(--stage "main:$out/main.log:$(bazel info bazel-testlogs 2>/dev/null):$rc")
lap main

./tools/ci/opt_smoke.sh "$out/extra.txt" 2>&1 | tail -n 20
lap opt

bazel test --config=asan -k --build_tests_only --test_tag_filters=-fuzz_replay //libs/block/... //libs/vm-memory/... //libs/vcpu/... //libs/virtio/... //libs/migration/... //launcher/control/... \
  //tests/e2e:virtio_test //tests/e2e:linux_virtio_test \
  2>&1 | tee "$out/asan.log" | tail -n 25
rc=${PIPESTATUS[0]}
stages+=(--stage "asan:$out/asan.log:$(bazel info --config=asan bazel-testlogs 2>/dev/null):$rc")
lap asan

FUZZ_SECONDS=${FUZZ_SECONDS:-15} ./tools/fuzz/run_fuzzers.sh "$out/extra.txt" \
  2>&1 | tail -n 40
rc=${PIPESTATUS[0]}
((rc == 0)) || echo "FAIL fuzz: run_fuzzers.sh exited $rc" >>"$out/extra.txt"
lap fuzz

bazel shutdown >/dev/null 2>&1
printf '%sci: all stages took %d s\n' "$timings" "$SECONDS"
python3 tools/ci/summarize.py "${stages[@]}" --extra "$out/extra.txt"
