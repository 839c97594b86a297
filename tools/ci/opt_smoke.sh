#!/usr/bin/env bash
# The release build in CI: `bazel build -c opt` of kindling, kindling-gpu
# and kindling-img (what users ship), their --version, and the optimised kindling booting the
# hello guest where /dev/kvm works. Appends `PASS|FAIL|SKIP opt:<what>` lines
# to the results file $1 (read by tools/ci/summarize.py).
set -uo pipefail
cd "$(dirname "$0")/../.."
results=${1:?usage: opt_smoke.sh RESULTS_FILE}
say() { echo "$*" | tee -a "$results"; }

if ! bazel build -c opt //launcher:kindling //launcher:kindling-gpu //libs/block:kindling-img \
  //tests/guests:hello.elf; then
  say "FAIL opt:build (bazel build -c opt failed; see above)"
  exit 0
fi
say "PASS opt:build"
bin=$(bazel info -c opt bazel-bin 2>/dev/null)

for tool in launcher/kindling libs/block/kindling-img; do
  name=$(basename "$tool")
  v=$("$bin/$tool" --version 2>&1)
  if [[ $v =~ ^$name\ [0-9]+\.[0-9]+\.[0-9]+\  ]]; then
    say "PASS opt:$name --version ($v)"
  else
    say "FAIL opt:$name --version printed '$v'"
  fi
done

# -c first: as root, `exec 3<>` on a missing /dev/kvm would create a
# regular file there, which later tests then take for KVM.
if [[ ! -c /dev/kvm ]] || ! { exec 3<>/dev/kvm; } 2>/dev/null; then
  say "SKIP opt:boot-hello (no usable /dev/kvm; the other stages boot under nested KVM)"
  exit 0
fi
exec 3>&-
log=$(mktemp)
timeout 60 "$bin/launcher/kindling" run --kernel "$bin/tests/guests/hello.elf" \
  --cmdline "kindling-test opt" </dev/null >"$log" 2>&1
status=$?
if ((status == 0)) && grep -q "^hello: ok" "$log"; then
  say "PASS opt:boot-hello"
else
  cat "$log"
  say "FAIL opt:boot-hello (exit $status)"
fi
rm -f "$log"
