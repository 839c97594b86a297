#!/bin/bash
# CPU pools on a real etcd (Debian's etcd-server) on loopback, no KVM needed:
# hosts join with `kindling pool-join` (profiles from libs/vcpu/testdata),
# `kindling cpu-baseline --etcd` computes the pool's template from what is
# published, a host that leaves drops out at once, and on a three-node
# cluster a host that dies (SIGKILL: no revoke) drops out when its lease
# expires while a live one stays.
# Usage: etcd_pool_test.sh KINDLING_CTL SKYLAKE.json ROME.json
set -u
ctl=$1 sky=$2 rome=$3
if ! command -v etcd >/dev/null; then
  # tools/setup.sh installs etcd-server: under CI=true its absence fails.
  [[ ${CI:-} == true ]] && { echo "FAIL etcd is not installed (tools/setup.sh installs etcd-server)"; exit 1; }
  echo "SKIP: etcd is not installed (apt-get install etcd-server)"
  exit 0
fi
tmp=$(mktemp -d)
failures=0
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
check() {  # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; failures=$((failures + 1)); fi
}
free_ports() {  # free_ports N: N distinct free TCP ports on 127.0.0.1
  python3 -c "
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(('127.0.0.1', 0))
print(' '.join(str(s.getsockname()[1]) for s in socks))" "$1"
}
start_cluster() {  # start_cluster NAME N: N members; sets $endpoints
  local name=$1 n=$2 ports initial="" i
  read -r -a ports <<<"$(free_ports $((2 * n)))"
  for ((i = 0; i < n; i++)); do
    initial+="${initial:+,}$name$i=http://127.0.0.1:${ports[$((2 * i + 1))]}"
  done
  endpoints=""
  for ((i = 0; i < n; i++)); do
    local client=${ports[$((2 * i))]} peer=${ports[$((2 * i + 1))]}
    etcd --name "$name$i" --data-dir "$tmp/$name$i" \
      --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token "$name" \
      >"$tmp/$name$i.log" 2>&1 &
    pids+=($!)
    endpoints+="${endpoints:+,}127.0.0.1:$client"
  done
}
members() {  # members ENDPOINTS POOL: the baseline's input, one host per line
  "$ctl" cpu-baseline --etcd "$1" --pool "$2" --output "$tmp/members.json" 2>"$tmp/members.err" || return 1
  return 0
}
wait_etcd() {  # wait_etcd ENDPOINT: until etcd answers there (30 s)
  for _ in $(seq 60); do
    "$ctl" cpu-baseline --etcd "$1" --pool probe 2>&1 | grep -q 'has no hosts' && return 0
    sleep 0.5
  done
  echo "etcd at $1 did not come up"; cat "$tmp"/*.log
  return 1
}
wait_join() {  # wait_join LOG: until pool-join says it joined (10 s)
  for _ in $(seq 100); do grep -q 'joined CPU pool' "$1" && return 0; sleep 0.1; done
  return 1
}

# One node: join, baseline, leave.
start_cluster one 1
one=$endpoints
check "etcd (one node) is up" wait_etcd "$one"
"$ctl" pool-join --etcd "$one" --pool lab --profile "$sky" --host sky 2>"$tmp/sky.log" &
sky_pid=$!; pids+=($sky_pid)
"$ctl" pool-join --etcd "$one" --pool lab --profile "$rome" --host rome 2>"$tmp/rome.log" &
rome_pid=$!; pids+=($rome_pid)
check "pool-join: two hosts joined" bash -c "$(declare -f wait_join); wait_join '$tmp/sky.log' && wait_join '$tmp/rome.log'"
"$ctl" cpu-baseline "$rome" "$sky" --output "$tmp/files.json"
"$ctl" cpu-baseline --etcd "http://$one" --pool lab --output "$tmp/etcd.json"
check "cpu-baseline --etcd: exit 0 ($?)" test $? -eq 0
check "the pool's baseline is the baseline of the published profiles" cmp -s "$tmp/files.json" "$tmp/etcd.json"
check "it drops avx512f (Skylake has it, Rome does not)" \
  bash -c "python3 -c \"import json,sys; t=json.load(open('$tmp/etcd.json')); m=[x for x in t['cpuid_modifiers'] if x['leaf']=='0x7' and x['subleaf']=='0x0'][0]; b=[r for r in m['modifiers'] if r['register']=='ebx'][0]['bitmap']; sys.exit(0 if b[2:].rjust(32,'x')[31-16]=='0' else 1)\""
kill -TERM "$rome_pid"; wait "$rome_pid"
check "pool-join leaves on SIGTERM: exit 0 ($?)" test $? -eq 0
"$ctl" cpu-baseline "$sky" --output "$tmp/sky_only.json"
"$ctl" cpu-baseline --etcd "$one" --pool lab --output "$tmp/etcd2.json"
check "a host that left is gone at once" cmp -s "$tmp/sky_only.json" "$tmp/etcd2.json"
"$ctl" cpu-baseline --etcd "$one" --pool empty 2>"$tmp/err.txt"
check "an empty pool: exit 1, NOT_FOUND naming it" bash -c "[[ $? -eq 1 ]] && grep -q 'pool empty has no hosts' '$tmp/err.txt'"
"$ctl" cpu-baseline --etcd "$one" --pool 'bad/name' 2>"$tmp/err.txt"
check "a bad pool name: exit 1 naming it" bash -c "[[ $? -eq 1 ]] && grep -q \"pool 'bad/name'\" '$tmp/err.txt'"
read -r dead <<<"$(free_ports 1)"
timeout 30 "$ctl" cpu-baseline --etcd "127.0.0.1:$dead" --pool lab 2>"$tmp/err.txt"
check "no etcd there: exit 1, UNAVAILABLE naming the endpoint" \
  bash -c "[[ $? -eq 1 ]] && grep -q \"etcd at 127.0.0.1:$dead: no answer\" '$tmp/err.txt'"
"$ctl" pool-join --etcd "$one" --pool lab --profile "$tmp/none.json" 2>"$tmp/err.txt"
check "pool-join of a missing profile: exit 1 naming it" bash -c "[[ $? -eq 1 ]] && grep -q 'none.json' '$tmp/err.txt'"

# Three nodes: a host that dies drops out when its 2 s lease expires; one
# that lives (4 s lease, renewed every 1.3 s) stays.
start_cluster three 3
three=$endpoints
first=${three%%,*} last=${three##*,}
check "etcd (three nodes) is up" bash -c "$(declare -f wait_etcd); ctl='$ctl' tmp='$tmp'; wait_etcd '$first' && wait_etcd '$last'"
"$ctl" pool-join --etcd "$first" --pool ha --profile "$sky" --host dies --ttl-s 2 2>"$tmp/dies.log" &
dies_pid=$!; pids+=($dies_pid)
"$ctl" pool-join --etcd "$three" --pool ha --profile "$rome" --host lives --ttl-s 4 2>"$tmp/lives.log" &
lives_pid=$!; pids+=($lives_pid)
check "three-node cluster: both hosts joined" \
  bash -c "$(declare -f wait_join); wait_join '$tmp/dies.log' && wait_join '$tmp/lives.log'"
"$ctl" cpu-baseline --etcd "$last" --pool ha --output "$tmp/ha_both.json"
"$ctl" cpu-baseline "$sky" "$rome" --output "$tmp/both.json"
check "read through another member: both hosts" cmp -s "$tmp/both.json" "$tmp/ha_both.json"
kill -9 "$dies_pid"
sleep 7
"$ctl" cpu-baseline --etcd "$last" --pool ha --output "$tmp/ha_after.json"
"$ctl" cpu-baseline "$rome" --output "$tmp/rome_only.json"
check "7 s after SIGKILL the dead host's lease has expired; the live one stays" \
  cmp -s "$tmp/rome_only.json" "$tmp/ha_after.json"
kill -TERM "$lives_pid"; wait "$lives_pid"
echo "$failures failure(s)"
((failures == 0))
