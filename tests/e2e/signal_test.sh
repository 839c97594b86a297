#!/usr/bin/env bash
# SIGTERM and SIGINT stop a running VM cleanly: kindling exits 128+signal
# within a few seconds and says why on stderr. Runs kindling directly where
# /dev/kvm works, else inside tools/nested-kvm.
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
kindling=$1 ticker=$2
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/signal.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/signal.sh" <<'SCRIPT'
for sig in TERM INT; do
  ./kindling run --kernel ticker.elf --cmdline forever >out.$sig 2>err.$sig &
  pid=$!
  i=0
  while ! grep -q "tick 1 " out.$sig && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
  kill -$sig $pid
  i=0
  while kill -0 $pid 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  if kill -0 $pid 2>/dev/null; then echo "SIG$sig: still running 10 s later"; kill -9 $pid; fi
  wait $pid
  echo "SIG$sig: status $? ticks $(grep -c tick out.$sig) stderr: $(cat err.$sig)"
done
SCRIPT
if [[ -c /dev/kvm ]] && { exec 3<>/dev/kvm; } 2>/dev/null; then
  cp "$kindling" "$tmp/kindling"
  cp "$ticker" "$tmp/ticker.elf"
  (cd "$tmp" && sh signal.sh) >"$tmp/log" 2>&1
else
  echo "signal_test: no usable /dev/kvm: running under nested KVM"
  "$here/../../tools/nested-kvm/run.sh" --outcome "$tmp/outcome" --mem 1024 --timeout 300 --bin "$kindling" \
    --file "$ticker:ticker.elf" --file "$tmp/signal.sh:signal.sh" -- sh signal.sh \
    >"$tmp/raw" 2>&1
  [[ $(cat "$tmp/outcome" 2>/dev/null) == skip* ]] && { cat "$tmp/raw"; exit 0; }
  tr -d '\r' <"$tmp/raw" >"$tmp/log"
fi
cat "$tmp/log"
failed=0
grep -qE "^SIGTERM: status 143 ticks [1-9][0-9]* stderr: kindling: stopped by signal 15$" "$tmp/log" ||
  { echo "FAILED: SIGTERM did not stop kindling with status 143"; failed=1; }
grep -qE "^SIGINT: status 130 ticks [1-9][0-9]* stderr: kindling: stopped by signal 2$" "$tmp/log" ||
  { echo "FAILED: SIGINT did not stop kindling with status 130"; failed=1; }
exit $failed
