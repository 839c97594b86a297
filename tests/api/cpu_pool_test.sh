#!/bin/bash
# CPU pools end to end: this host's profile (kindling cpu-profile), a
# baseline with a second CPU's profile (kindling cpu-baseline), a guest that
# prints its CPUID under that baseline (checked by cpu_pool_check.py against
# both profiles), a live migration to a destination that stands in for the
# other CPU, and the refusals of a guest that would lose features (migration
# and restore), and the pool on etcd: `serve --pool` joins beside the other
# CPU's profile (pool-join), `cpu-baseline --etcd` gives the same template,
# CreateVm refuses a VM outside the pool unless --outside-pool.
#
# The stand-in: the destination runs with --host-cpu-template POOL, i.e.
# with KVM's supported CPUID narrowed to the baseline of this host and the
# second profile (epyc_rome.json), which is within that profile. One machine
# plays both hosts; that is this test's way of having another vendor's CPU.
#
# Where /dev/kvm is missing, or is kvm_pvm (which does not honour CPUID
# for many leaves), everything runs under tools/nested-kvm, whose KVM does.
#
# Usage: cpu_pool_test.sh KINDLING KINDLING_CTL CPUID_ELF TICKER_ELF OTHER_PROFILE CHECK_PY
set -u
if [[ ${1:-} == --inner ]]; then
  shift
  kindling=$1 cpuid=$2 ticker=$3 other=$4
  tmp=$(mktemp -d)
  export KINDLING_SOCKET=$tmp/k.sock
  check() {  # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fi
  }
  "$kindling" cpu-profile --host this-host --output "$tmp/host.json"
  check "cpu-profile: exit 0, a profile of this host" grep -q '"host": "this-host"' "$tmp/host.json"
  "$kindling" cpu-baseline "$tmp/host.json" "$other" --output "$tmp/pool.json"
  check "cpu-baseline: exit 0, a template" grep -q '"cpuid_modifiers"' "$tmp/pool.json"
  "$kindling" cpu-baseline "$tmp/host.json" "$tmp/missing.json" 2>"$tmp/err.txt"
  check "cpu-baseline of a missing file: exit 1 naming it" \
    bash -c "[[ $? -eq 1 ]] && grep -q 'missing.json' '$tmp/err.txt'"
  echo "=== host.json"; cat "$tmp/host.json"
  echo "=== pool.json"; cat "$tmp/pool.json"
  echo "=== guest"
  "$kindling" run --kernel "$cpuid" --memory 32 --cpu-template "$tmp/pool.json" </dev/null
  echo "=== end"

  # The pool on etcd: the other CPU's profile joins, then this daemon.
  # (tools/nested-kvm's guest starts with loopback down.)
  ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null
  etcd_url=http://127.0.0.1:23790
  etcd --data-dir "$tmp/etcd" --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls http://127.0.0.1:23800 >"$tmp/etcd.log" 2>&1 &
  etcd_pid=$!
  for _ in $(seq 20); do
    "$kindling" cpu-baseline --etcd "$etcd_url" --pool lab 2>&1 | grep -q 'has no hosts' && break
    sleep 0.5
  done
  "$kindling" pool-join --etcd "$etcd_url" --pool lab --profile "$other" --host other-cpu \
    2>"$tmp/join.log" &
  join_pid=$!
  "$kindling" serve --listen "unix:$KINDLING_SOCKET" --state-dir "$tmp/state" --stop-vms-on-exit \
    --pool lab --etcd "$etcd_url" --pool-host this-host 2>"$tmp/serve.log" &
  serve_pid=$!
  trap 'kill $serve_pid $join_pid 2>/dev/null; wait $serve_pid 2>/dev/null; kill $etcd_pid; rm -rf "$tmp"' EXIT
  for _ in $(seq 100); do [[ -S $KINDLING_SOCKET ]] && break; sleep 0.1; done
  cat "$tmp/serve.log"
  check "serve --pool: joined" grep -q 'joined CPU pool lab' "$tmp/serve.log"
  "$kindling" cpu-baseline --etcd "$etcd_url" --pool lab --output "$tmp/etcd_pool.json"
  grep -v '"host"' "$tmp/pool.json" >"$tmp/a.json"
  grep -v '"host"' "$tmp/etcd_pool.json" >"$tmp/b.json"
  check "cpu-baseline --etcd: the same template as from the two files" cmp "$tmp/a.json" "$tmp/b.json"
  "$kindling" create --id outside --kernel "$ticker" --memory 64 2>"$tmp/create.err"
  check "create without the baseline in the pool: exit 1, naming the host that lacks a feature" \
    bash -c "[[ $? -eq 1 ]] && grep -q 'FAILED_PRECONDITION: the VM.s CPU is not within its CPU pool.*not supported by host other-cpu' '$tmp/create.err'"
  "$kindling" host --output json >"$tmp/info.json"
  check "host: the daemon reports this host's CPU profile" \
    grep -q '"cpu_profile_json":"{' "$tmp/info.json"

  # A guest under the pool's baseline moves to the stand-in host.
  "$kindling" create --id pooled --kernel "$ticker" --memory 64 --cpu-template "$tmp/pool.json" \
    --cmdline "console=ttyS0 forever" >/dev/null
  "$kindling" start pooled >/dev/null
  sleep 1
  timeout -k 5 60 "$kindling" run --incoming "unix:$tmp/b.sock" --host-cpu-template "$tmp/pool.json" \
    </dev/null >"$tmp/b.out" 2>"$tmp/b.err" &
  b_pid=$!
  for _ in $(seq 100); do [[ -S $tmp/b.sock ]] && break; sleep 0.1; done
  "$kindling" migrate pooled --to "unix:$tmp/b.sock" >"$tmp/m.out" 2>"$tmp/m.err"
  check "migrate under the baseline to the other CPU's stand-in: exit 0 ($?)" test $? -eq 0
  for _ in $(seq 50); do grep -q 'ticker: tick' "$tmp/b.out" && break; sleep 0.1; done
  check "the guest ticks on there" grep -q 'ticker: tick' "$tmp/b.out"
  kill "$b_pid" 2>/dev/null; wait "$b_pid" 2>/dev/null

  # A guest that sees this host's every feature is refused, naming them.
  "$kindling" create --id full --kernel "$ticker" --memory 64 --cmdline "console=ttyS0 forever" \
    --outside-pool >/dev/null
  check "create --outside-pool: accepted" bash -c "'$kindling' get full | grep -q CREATED"
  "$kindling" start full >/dev/null
  timeout -k 5 60 "$kindling" run --incoming "unix:$tmp/c.sock" --host-cpu-template "$tmp/pool.json" \
    </dev/null >"$tmp/c.out" 2>"$tmp/c.err" &
  c_pid=$!
  for _ in $(seq 100); do [[ -S $tmp/c.sock ]] && break; sleep 0.1; done
  "$kindling" migrate full --to "unix:$tmp/c.sock" >"$tmp/m2.out" 2>"$tmp/m2.err"
  check "migrate a guest with features the destination lacks: exit 1 ($?)" test $? -eq 1
  check "the refusal names each feature and the host" \
    grep -q 'la57 (leaf 0x7 ecx bit 16).*not supported by host' "$tmp/m2.err"
  check "refused before any memory was sent" bash -c "! grep -q 'migration round' '$tmp/m2.err'"
  check "the source VM runs on" bash -c "'$kindling' get full | grep -q RUNNING"
  wait "$c_pid"
  check "the destination gives up: 125" test $? -eq 125
  cat "$tmp/m2.err"

  # A snapshot taken "elsewhere" (all of this host's features) is refused too.
  "$kindling" snapshot full "$tmp/snap" >/dev/null
  "$kindling" run --restore "$tmp/snap" --host-cpu-template "$tmp/pool.json" </dev/null \
    >/dev/null 2>"$tmp/r.err"
  check "restore on the stand-in: 125, naming the features" \
    bash -c "[[ $? -eq 125 ]] && grep -q 'la57 (leaf 0x7 ecx bit 16)' '$tmp/r.err'"
  exit 0
fi

kindling=$1 ctl=$2 cpuid=$3 ticker=$4 other=$5 check_py=$6
here=$(dirname "${BASH_SOURCE[0]}")
if ! command -v etcd >/dev/null; then
  [[ ${CI:-} == true ]] && { echo "FAIL etcd is not installed (tools/setup.sh installs etcd-server)"; exit 1; }
  echo "SKIP: etcd is not installed (apt-get install etcd-server)"
  exit 0
fi
out=${TEST_TMPDIR:-/tmp}/cpu_pool.out
if [[ -w /dev/kvm ]] && ! [[ -d /sys/module/kvm_pvm ]]; then
  bash "$0" --inner "$kindling" "$cpuid" "$ticker" "$other" >"$out" 2>&1
else
  echo "cpu_pool_test: no /dev/kvm that honours CPUID here: running under nested KVM"
  outcome=${TEST_TMPDIR:-/tmp}/nested.outcome
  rm -f "$outcome"
  "$here/../../tools/nested-kvm/run.sh" --outcome "$outcome" --mem 1024 --timeout 600 \
    --bin /bin/bash --bin "$kindling" --bin "$ctl" --bin "$(command -v etcd)" \
    --file "$0:cpu_pool_test.sh" \
    --file "$cpuid:cpuid.elf" --file "$ticker:ticker.elf" --file "$other:other.json" \
    -- ./bash ./cpu_pool_test.sh --inner ./kindling cpuid.elf ticker.elf other.json >"$out" 2>&1
  if [[ $(cat "$outcome" 2>/dev/null) == skip* ]]; then
    grep -m1 '^SKIP:' "$out" || echo "SKIP: nested KVM unavailable"
    exit 0
  fi
fi
tr -d '\r' <"$out" >"$out.txt"
python3 "$check_py" "$out.txt" "$other"
