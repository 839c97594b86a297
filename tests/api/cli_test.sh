#!/bin/bash
# The `kindling` CLI verbs against `kindling serve`: create (with `kindling
# run`'s flags), start, console (replay + live, and Ctrl-] on a terminal),
# get/list (table and --output json), events, metrics, host, kill, delete,
# and the errors and exit statuses of bad requests.
# Usage: cli_test.sh KINDLING HELLO_ELF TICKER_ELF
set -u
kindling=$1 hello=$2 ticker=$3
if [[ ! -w /dev/kvm ]]; then
  echo "SKIP: no usable /dev/kvm"
  exit 0
fi
tmp=$(mktemp -d)
export KINDLING_SOCKET=$tmp/k.sock
failures=0
check() {  # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; failures=$((failures + 1)); fi
}
cleanup() {
  [[ -n ${events_pid:-} ]] && kill "$events_pid" 2>/dev/null
  [[ -n ${serve_pid:-} ]] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

"$kindling" serve --listen "unix:$KINDLING_SOCKET" --state-dir "$tmp/state" --stop-vms-on-exit \
  2>"$tmp/serve.log" &
serve_pid=$!
for _ in $(seq 100); do [[ -S $KINDLING_SOCKET ]] && break; sleep 0.1; done

check "host: KVM usable" bash -c "'$kindling' host | grep -q '^kvm  *usable, API 12'"
id=$("$kindling" create --kernel "$hello" --memory 64 --cmdline "console=ttyS0 cli-test")
check "create prints the new id ($id)" test -n "$id"
check "get: CREATED" bash -c "'$kindling' get '$id' | grep -q '^$id  *CREATED'"
"$kindling" events "$id" >"$tmp/events.txt" &
events_pid=$!
sleep 0.3
check "start" bash -c "'$kindling' start '$id' >/dev/null"
timeout 30 "$kindling" console "$id" </dev/null >"$tmp/console.txt"
check "console ends when the guest is done, exit 0" test $? -eq 0
check "console: the guest's command line and its ok" \
  bash -c "grep -q 'cmdline: console=ttyS0 cli-test' '$tmp/console.txt' && grep -q 'hello: ok' '$tmp/console.txt'"
check "get --output json: STOPPED" bash -c "'$kindling' get '$id' --output json | grep -q '\"state\":\"VM_STATE_STOPPED\"'"
check "list shows it" bash -c "'$kindling' list | grep -q '^$id  *STOPPED  *[0-9]*  *0 (guest wrote 0'"
check "metrics: exits counted" bash -c "'$kindling' metrics '$id' | grep -Eq '^exits +[1-9]'"
sleep 0.3
check "events: CREATED -> RUNNING and the exit" \
  bash -c "grep -q 'state CREATED -> RUNNING' '$tmp/events.txt' && grep -q 'exited 0 (guest wrote 0' '$tmp/events.txt'"
check "delete" bash -c "'$kindling' delete '$id' >/dev/null"
"$kindling" get "$id" 2>"$tmp/err.txt"
check "get after delete: exit 1, NOT_FOUND" bash -c "[[ $? -eq 1 ]] && grep -q 'NOT_FOUND: no VM' '$tmp/err.txt'"
"$kindling" create --memory 64 2>"$tmp/err.txt"
check "create without --kernel: usage error 2" bash -c "[[ $? -eq 2 ]] && grep -q -- '--kernel is required' '$tmp/err.txt'"
"$kindling" create --kernel "$hello" --memory 4 2>"$tmp/err.txt"
check "create --memory 4: INVALID_ARGUMENT naming the field" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'INVALID_ARGUMENT: config.memory_mib: 4 is below the minimum of 8' '$tmp/err.txt'"

# A terminal: raw mode, live output, Ctrl-] detaches and the VM runs on.
"$kindling" create --id tick --kernel "$ticker" --memory 64 --cmdline "console=ttyS0 forever" >/dev/null
"$kindling" start tick >/dev/null
(sleep 2; printf '\035') | timeout 20 script -q -e -c "'$kindling' console tick" /dev/null >"$tmp/tty.txt"
check "console on a terminal: Ctrl-] detaches (status $?)" test $? -eq 0
check "console on a terminal: ticks shown" grep -q 'ticker: tick' "$tmp/tty.txt"
check "the VM runs on after a detach" bash -c "'$kindling' get tick | grep -q RUNNING"
check "kill: 137" bash -c "'$kindling' kill tick | grep -q 'STOPPED .* 137 (killed through the API)'"
check "delete the killed VM" bash -c "'$kindling' delete tick >/dev/null"

if ((failures)); then
  echo "--- serve.log"
  cat "$tmp/serve.log"
fi
echo "$failures failures"
((failures == 0))
