#!/bin/bash
# The `kindling` CLI verbs against `kindling serve`: create (with `kindling
# run`'s flags), start, console (replay + live, and Ctrl-] on a terminal),
# get/list (table and --output json), events, metrics, host, kill, delete,
# snapshot/restore, migrate to `kindling run --incoming`, migrate-set on a
# running migration, screenshot of a GPU VM, shutdown (the ACPI power
# button) of a guest that acts on it, and the errors and exit statuses of
# bad requests.
# Usage: cli_test.sh KINDLING HELLO_ELF TICKER_ELF GPU_ELF PROBE_ELF POWER_ELF
set -u
kindling=$1 hello=$2 ticker=$3 gpu=$4 probe=$5 power=$6
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
  if "$@"; then
    echo "ok   $what [${SECONDS}s]"
  else
    echo "FAIL $what [${SECONDS}s]"
    failures=$((failures + 1))
  fi
}
# console_until VM PATTERN FILE [TRIES]: the VM's console so far into FILE,
# again every 0.3 s until FILE holds PATTERN (grep's); false if it never did.
console_until() {
  local _
  for _ in $(seq "${4:-100}"); do
    timeout 0.3 "$kindling" console "$1" </dev/null >"$3" 2>/dev/null
    grep -q "$2" "$3" && return 0
  done
  return 1
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

# shutdown presses the ACPI power button: the power_button guest powers off
# (S5 through the sleep control register) and the VM stops with status 0.
"$kindling" create --id pwr --kernel "$power" --memory 64 >/dev/null
check "shutdown of a VM not started: FAILED_PRECONDITION, exit 1" \
  bash -c "! '$kindling' shutdown pwr 2>'$tmp/err.txt' && grep -q 'FAILED_PRECONDITION' '$tmp/err.txt'"
"$kindling" start pwr >/dev/null
console_until pwr 'power_button: waiting' "$tmp/pwr.txt"
check "power_button guest waits for the button" grep -q 'sleep control port' "$tmp/pwr.txt"
"$kindling" shutdown pwr >/dev/null
for _ in $(seq 100); do "$kindling" get pwr | grep -q STOPPED && break; sleep 0.1; done
check "shutdown: the guest powered off, STOPPED with status 0 (ACPI S5)" \
  bash -c "'$kindling' get pwr | grep -q '^pwr  *STOPPED  *[0-9]*  *0 .*ACPI S5'"
timeout 5 "$kindling" console pwr </dev/null >"$tmp/pwr.txt" 2>/dev/null
check "shutdown: the guest saw the press" grep -q 'power_button: pressed' "$tmp/pwr.txt"
"$kindling" delete pwr >/dev/null

# Snapshot through the daemon, restore with `kindling run --restore`.
"$kindling" create --id snap --kernel "$ticker" --memory 64 --cmdline "console=ttyS0 forever" >/dev/null
"$kindling" start snap >/dev/null
console_until snap 'ticker: tick 3 ' "$tmp/snap_before.txt"
check "snapshot --stay-paused: the VM is PAUSED after it" \
  bash -c "'$kindling' snapshot snap '$tmp/snap' --stay-paused | grep -q '^snap  *PAUSED'"
check "snapshot: state.pb and a sparse memory file" \
  bash -c "[[ -s '$tmp/snap/state.pb' && \$(stat -c %s '$tmp/snap/memory') -eq \$((64 << 20)) && \$(du -k '$tmp/snap/memory' | cut -f1) -lt 32768 ]]"
timeout 0.3 "$kindling" console snap </dev/null >"$tmp/snap_before.txt"
last=$(tr -d '\r' <"$tmp/snap_before.txt" | grep -o 'ticker: tick [0-9]* sum [0-9a-f]*$' | tail -1 | cut -d' ' -f3)
timeout 5 "$kindling" run --restore "$tmp/snap" </dev/null >"$tmp/restored.txt" 2>"$tmp/restored.err"
status=$?  # coreutils' timeout says 124; busybox's passes on kindling's 128+SIGTERM
check "run --restore: runs until stopped (status $status)" bash -c "[[ $status -eq 124 || $status -eq 143 ]]"
first=$(grep -o 'ticker: tick [0-9]* sum' "$tmp/restored.txt" | head -1 | cut -d' ' -f3)
check "run --restore: carries on after tick ${last:-?} (first tick ${first:-none}), no reboot" \
  bash -c "[[ -n '$last' && -n '$first' ]] && ((${first:-0} > ${last:-0} && ${first:-0} <= ${last:-0} + 2)) && ! grep -q 'ticker: start' '$tmp/restored.txt'"
check "restore into the daemon: a new VM, CREATED" \
  bash -c "[[ \$('$kindling' restore '$tmp/snap' --id back --restore-mode lazy) == back ]] && '$kindling' get back | grep -q '^back  *CREATED'"
"$kindling" start back >/dev/null
console_until back 'ticker: tick [0-9]* sum' "$tmp/back.txt"
first=$(grep -o 'ticker: tick [0-9]* sum' "$tmp/back.txt" | head -1 | cut -d' ' -f3)
check "restored VM carries on after tick ${last:-?} (first tick ${first:-none}), no reboot" \
  bash -c "[[ -n '$last' && -n '$first' ]] && ((${first:-0} > ${last:-0} && ${first:-0} <= ${last:-0} + 2)) && ! grep -q 'ticker: start' '$tmp/back.txt'"
"$kindling" delete back >/dev/null
"$kindling" restore "$tmp/nothing" 2>"$tmp/err.txt"
check "restore of a missing snapshot: NOT_FOUND naming state.pb, exit 1" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'NOT_FOUND: .*nothing/state.pb' '$tmp/err.txt'"
check "snapshot of a running VM leaves it RUNNING" \
  bash -c "'$kindling' resume snap >/dev/null && '$kindling' snapshot snap '$tmp/snap2' | grep -q '^snap  *RUNNING'"
# A diff on the full snapshot snap2: only the pages written since, and a
# restore through the chain carries on with the same running sum.
"$kindling" snapshot snap "$tmp/snap2" --diff 2>"$tmp/err.txt"
check "snapshot --diff into its base's own directory: refused, exit 1" \
  bash -c "[[ $? -eq 1 ]] && grep -q \"its base's own directory\" '$tmp/err.txt'"
"$kindling" snapshot snap "$tmp/snap3" --diff 2>"$tmp/err.txt"
check "snapshot --diff after a failed one: FAILED_PRECONDITION, exit 1" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'FAILED_PRECONDITION: .*diff snapshot: this VM has no earlier snapshot' '$tmp/err.txt' || ! cat '$tmp/err.txt'"
"$kindling" snapshot snap "$tmp/snap2" >/dev/null
sleep 1
check "snapshot --diff --stay-paused: PAUSED" \
  bash -c "'$kindling' snapshot snap '$tmp/snap3' --diff --stay-paused | grep -q '^snap  *PAUSED'"
check "snapshot --diff: a full-length memory file holding fewer pages than its base" \
  bash -c "[[ \$(stat -c %s '$tmp/snap3/memory') -eq \$((64 << 20)) && \$(du -k '$tmp/snap3/memory' | cut -f1) -lt \$(du -k '$tmp/snap2/memory' | cut -f1) ]]"
timeout 5 "$kindling" run --restore "$tmp/snap3" </dev/null >"$tmp/diff_restored.txt" 2>&1
first=$(tr -d '\r' <"$tmp/diff_restored.txt" | grep -o 'ticker: tick [0-9]* sum [0-9a-f]*$' | head -1)
"$kindling" resume snap >/dev/null
tick=$(cut -d' ' -f3 <<<"$first")
for _ in $(seq 100); do
  timeout 0.3 "$kindling" console snap </dev/null >"$tmp/snap_after.txt"
  [[ -n $tick ]] && grep -q "ticker: tick $tick " "$tmp/snap_after.txt" && break
done
orig=$(tr -d '\r' <"$tmp/snap_after.txt" | grep -o "ticker: tick $tick sum [0-9a-f]*$" | head -1)
check "run --restore of a diff: tick ${tick:-none} has the sum the original VM printed (${first:-none} / ${orig:-none})" \
  bash -c "[[ -n '$first' && '$first' == '$orig' ]] && ! grep -q 'ticker: start' '$tmp/diff_restored.txt'"
"$kindling" restore "$tmp/snap3" --restore-mode uffd 2>"$tmp/err.txt"
check "restore of a diff with --restore-mode uffd: refused, exit 1" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'is a diff: restore mode uffd' '$tmp/err.txt'"
# Live migration to `kindling run --incoming` (a one-shot destination).
"$kindling" migrate snap --to "unix:$tmp/nobody.sock" 2>"$tmp/err.txt"
check "migrate to nobody: an error naming the address, exit 1, the VM runs on" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'nobody.sock' '$tmp/err.txt' && '$kindling' get snap | grep -q '^snap  *RUNNING'"
"$kindling" migrate snap --to tcp:nowhere 2>"$tmp/err.txt"
check "migrate --to tcp:nowhere: INVALID_ARGUMENT" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'INVALID_ARGUMENT: destination: .*expected tcp:HOST:PORT' '$tmp/err.txt'"
timeout 60 "$kindling" run --incoming "unix:$tmp/mig.sock" </dev/null >"$tmp/migrated.txt" \
  2>"$tmp/migrated.err" &
incoming_pid=$!
for _ in $(seq 100); do [[ -S $tmp/mig.sock ]] && break; sleep 0.1; done
console_until snap 'ticker: tick [0-9]* sum' "$tmp/snap_before.txt"
"$kindling" migrate snap --to "unix:$tmp/mig.sock" --max-downtime-ms 500 >"$tmp/migrate.out" \
  2>"$tmp/migrate.err"
status=$?
check "migrate: exit 0 ($status)" test "$status" -eq 0
check "migrate: progress on stderr, from round 0 to done" \
  bash -c "grep -q 'migration round 0' '$tmp/migrate.err' && grep -q 'migration done' '$tmp/migrate.err'"
check "migrate: the VM is STOPPED here" grep -q '^snap  *STOPPED' "$tmp/migrate.out"
if ((failures)); then cat "$tmp/migrate.out" "$tmp/migrate.err"; fi
for _ in $(seq 50); do grep -q 'ticker: tick' "$tmp/migrated.txt" && break; sleep 0.1; done
sleep 1
kill "$incoming_pid" 2>/dev/null
wait "$incoming_pid" 2>/dev/null
last=$(tr -d '\r' <"$tmp/snap_before.txt" | grep -o 'ticker: tick [0-9]* sum' | tail -1 | cut -d' ' -f3)
first=$(grep -o 'ticker: tick [0-9]* sum' "$tmp/migrated.txt" | head -1 | cut -d' ' -f3)
check "run --incoming: the guest ticks on there after tick ${last:-?} (first ${first:-none}), no reboot" \
  bash -c "[[ -n '$last' && -n '$first' ]] && ((${first:-0} > ${last:-0})) && ! grep -q 'ticker: start' '$tmp/migrated.txt'"
"$kindling" run --incoming "unix:$tmp/x.sock" --memory 64 2>"$tmp/err.txt"
check "run --incoming with --memory: refused, 125" \
  bash -c "[[ $? -eq 125 ]] && grep -q -- '--memory cannot be given with --incoming' '$tmp/err.txt'"
"$kindling" snapshot snap "$tmp/snap3" 2>"$tmp/err.txt"
check "snapshot of a stopped VM: FAILED_PRECONDITION" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'FAILED_PRECONDITION: VM .snap. is VM_STATE_STOPPED: only a running or paused VM' '$tmp/err.txt'"
"$kindling" delete snap >/dev/null

# Migration into this daemon: `kindling receive` is the destination.
"$kindling" receive --listen tcp:nowhere 2>"$tmp/err.txt"
check "receive --listen tcp:nowhere: INVALID_ARGUMENT, exit 1" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'INVALID_ARGUMENT: listen: .*expected tcp:HOST:PORT' '$tmp/err.txt'"
check "receive: a new VM, INCOMING" \
  bash -c "[[ \$('$kindling' receive --listen 'unix:$tmp/recv.sock' --id recv) == recv ]] && '$kindling' get recv | grep -q '^recv  *INCOMING'"
"$kindling" receive --listen "unix:$tmp/recv.sock" --id recv2 2>"$tmp/err.txt"
check "receive on an address in use: refused naming it, exit 1" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'recv.sock' '$tmp/err.txt' && ! '$kindling' get recv2 >/dev/null 2>&1"
"$kindling" start recv 2>"$tmp/err.txt"
check "start an INCOMING VM: FAILED_PRECONDITION" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'FAILED_PRECONDITION: .*waiting for an incoming migration' '$tmp/err.txt'"
"$kindling" create --id mig2 --kernel "$ticker" --memory 64 --cmdline "console=ttyS0 forever" >/dev/null
"$kindling" start mig2 >/dev/null
console_until mig2 'ticker: tick 2 ' "$tmp/mig2_before.txt"
"$kindling" migrate mig2 --to "unix:$tmp/recv.sock" >"$tmp/migrate2.out" 2>"$tmp/migrate2.err"
check "migrate into the daemon's receiving VM: exit 0, source STOPPED" \
  bash -c "[[ $? -eq 0 ]] && grep -q '^mig2  *STOPPED' '$tmp/migrate2.out' || ! cat '$tmp/migrate2.err'"
check "the receiving VM is RUNNING" bash -c "'$kindling' get recv | grep -q '^recv  *RUNNING'"
last=$(tr -d '\r' <"$tmp/mig2_before.txt" | grep -o 'ticker: tick [0-9]* sum' | tail -1 | cut -d' ' -f3)
console_until recv 'ticker: tick [0-9]* sum' "$tmp/recv.txt"
first=$(tr -d '\r' <"$tmp/recv.txt" | grep -o 'ticker: tick [0-9]* sum' | head -1 | cut -d' ' -f3)
check "receive: the guest ticks on in the new VM after tick ${last:-?} (first ${first:-none}), no reboot" \
  bash -c "[[ -n '$last' && -n '$first' ]] && ((${first:-0} > ${last:-0})) && ! grep -q 'ticker: start' '$tmp/recv.txt'"
check "kill the received VM: 137" bash -c "'$kindling' kill recv | grep -q 'STOPPED .* 137' ||
  { '$kindling' get recv; tail -20 '$tmp/state/vms/recv/vm.log'; false; }"
"$kindling" delete recv >/dev/null
"$kindling" delete mig2 >/dev/null
"$kindling" receive --listen "unix:$tmp/recv3.sock" --id recv3 >/dev/null
check "kill an INCOMING VM: STOPPED 137" bash -c "'$kindling' kill recv3 | grep -q 'STOPPED .* 137'"
# Nothing listens on its address any more: a new receive may (Listen
# refuses an address a live listener holds).
check "a killed INCOMING VM accepts no source: its address is free again" \
  bash -c "[[ -S '$tmp/recv3.sock' && \$('$kindling' receive --listen 'unix:$tmp/recv3.sock' --id recv4) == recv4 ]]"
"$kindling" kill recv4 >/dev/null
"$kindling" delete recv4 >/dev/null
"$kindling" delete recv3 >/dev/null
"$kindling" run --restore "$tmp/snap" --kernel "$ticker" 2>"$tmp/err.txt"
check "run --restore with --kernel: refused, 125" \
  bash -c "[[ $? -eq 125 ]] && grep -q -- '--kernel cannot be given with --restore' '$tmp/err.txt'"
"$kindling" run --restore "$tmp/nothing" 2>"$tmp/err.txt"
check "run --restore of a missing directory: 125 naming state.pb" \
  bash -c "[[ $? -eq 125 ]] && grep -q 'nothing/state.pb' '$tmp/err.txt'"

# A migration changed while it runs (migrate-set). The state_probe guest
# rewrites 8 MiB a round, so at 1 MiB/s round 0 alone takes 8 s.
"$kindling" create --id slow --kernel "$probe" --memory 64 \
  --cmdline "console=ttyS0 probe.rounds=0 probe.mib=8 probe.dirty=2048" >/dev/null
"$kindling" start slow >/dev/null
console_until slow 'probe: round 1 ' "$tmp/slow.txt" 300
wait_migrating() {  # until migrate-set finds the migration running
  for _ in $(seq 100); do
    "$kindling" migrate-set slow --bandwidth-mibps 1 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
"$kindling" receive --listen "unix:$tmp/slowdst.sock" --id slowdst >/dev/null
timeout 120 "$kindling" migrate slow --to "unix:$tmp/slowdst.sock" --bandwidth-mibps 1 \
  >"$tmp/slow.out" 2>"$tmp/slow.err" &
migrate_pid=$!
check "migrate-set while a migration runs: accepted" wait_migrating
"$kindling" pause slow 2>"$tmp/err.txt"
check "pause while migrating: FAILED_PRECONDITION, exit 1" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'FAILED_PRECONDITION: .*being migrated' '$tmp/err.txt'"
"$kindling" migrate-set slow --start-postcopy --cancel 2>"$tmp/err.txt"
check "migrate-set --start-postcopy in a pre-copy migration: refused (and so not cancelled)" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'not a post-copy' '$tmp/err.txt'"
check "migrate-set --cancel: accepted" bash -c "'$kindling' migrate-set slow --cancel >/dev/null"
wait "$migrate_pid"
status=$?
check "a cancelled migrate: exit 1 ($status), CANCELLED, the VM runs on here" \
  bash -c "[[ $status -eq 1 ]] && grep -q 'CANCELLED: .*cancelled' '$tmp/slow.err' && '$kindling' get slow | grep -q '^slow  *RUNNING'"
check "a cancelled migrate: the receiving VM failed, saying so" \
  bash -c "'$kindling' get slowdst | grep -q '^slowdst  *FAILED .*cancelled'"
"$kindling" migrate-set slow --cancel 2>"$tmp/err.txt"
check "migrate-set with no migration: FAILED_PRECONDITION" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'FAILED_PRECONDITION: .*no migration is running' '$tmp/err.txt'"
"$kindling" migrate-set slow 2>"$tmp/err.txt"
check "migrate-set with nothing to change: INVALID_ARGUMENT" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'INVALID_ARGUMENT: nothing to change' '$tmp/err.txt'"
# The same VM again, post-copy on request with the cap lifted: round 0
# stops short of the area's 8 MiB and no round 1 comes. The request goes
# out as soon as the migration is seen running (round 0 takes 8 s at
# 1 MiB/s); nothing slow may come between (a console attach under nested
# KVM once took long enough for rounds 0 and 1 to finish).
"$kindling" receive --listen "unix:$tmp/slowdst2.sock" --id slowdst2 >/dev/null
timeout 120 "$kindling" migrate slow --to "unix:$tmp/slowdst2.sock" --mode postcopy \
  --bandwidth-mibps 1 >"$tmp/slow2.out" 2>"$tmp/slow2.err" &
migrate_pid=$!
wait_migrating
check "migrate-set --bandwidth-mibps 0 --start-postcopy: accepted" \
  bash -c "'$kindling' migrate-set slow --bandwidth-mibps 0 --start-postcopy >/dev/null"
wait "$migrate_pid"
status=$?
# The source's console to its end (it stopped, so the attach ends).
timeout 20 "$kindling" console slow </dev/null >"$tmp/slow.txt" 2>/dev/null
last=$(tr -d '\r' <"$tmp/slow.txt" | grep -o 'probe: round [0-9]*' | tail -1 | cut -d' ' -f3)
check "post-copy on request: exit 0 ($status), source STOPPED" \
  bash -c "[[ $status -eq 0 ]] && grep -q '^slow  *STOPPED' '$tmp/slow2.out'"
check "post-copy on request: round 0 cut short, no round 1, then post-copy" \
  bash -c "grep -Eq 'migration round 0: [0-6]\.[0-9] MiB sent' '$tmp/slow2.err' && ! grep -q 'migration round 1' '$tmp/slow2.err' && grep -q 'migration post-copy' '$tmp/slow2.err'"
console_until slowdst2 'probe: round [0-9]* ' "$tmp/slowdst2.txt"
first=$(tr -d '\r' <"$tmp/slowdst2.txt" | grep -o 'probe: round [0-9]*' | head -1 | cut -d' ' -f3)
check "post-copy on request: the guest goes on there after round ${last:-?} (first ${first:-none}), pages intact" \
  bash -c "[[ -n '$last' && -n '$first' ]] && ((${first:-0} > ${last:-0})) && ! grep -q 'FAIL\|probe: start' '$tmp/slowdst2.txt'"
# Post-copy by itself right after round 0 (--postcopy-after-rounds 0): with
# a 1 ms downtime limit no round of dirtied pages would fit, so without it
# round 1 would follow.
"$kindling" migrate slowdst2 --to "unix:$tmp/nowhere.sock" --postcopy-after-rounds 2 2>"$tmp/err.txt"
check "migrate --postcopy-after-rounds without --mode postcopy: INVALID_ARGUMENT, exit 1" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'INVALID_ARGUMENT: postcopy_after_rounds: only for' '$tmp/err.txt'"
"$kindling" migrate slowdst2 --to "unix:$tmp/nowhere.sock" --mode postcopy \
  --postcopy-after-rounds 31 2>"$tmp/err.txt"
check "migrate --postcopy-after-rounds 31: INVALID_ARGUMENT naming the maximum, exit 1" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'postcopy_after_rounds: 31 is above the maximum of 30' '$tmp/err.txt'"
"$kindling" receive --listen "unix:$tmp/slowdst3.sock" --id slowdst3 >/dev/null
timeout 120 "$kindling" migrate slowdst2 --to "unix:$tmp/slowdst3.sock" --mode postcopy \
  --postcopy-after-rounds 0 --max-downtime-ms 1 >"$tmp/slow3.out" 2>"$tmp/slow3.err"
status=$?
check "post-copy after 0 rounds: exit 0 ($status), round 0, no round 1, then post-copy" \
  bash -c "[[ $status -eq 0 ]] && grep -q 'migration round 0' '$tmp/slow3.err' && ! grep -q 'migration round 1' '$tmp/slow3.err' && grep -q 'migration post-copy' '$tmp/slow3.err'"
console_until slowdst3 'probe: round [0-9]* ' "$tmp/slowdst3.txt"
check "post-copy after 0 rounds: the guest goes on there, pages intact" \
  bash -c "grep -q 'probe: round' '$tmp/slowdst3.txt' && ! grep -q 'FAIL\|probe: start' '$tmp/slowdst3.txt'"
if ((failures)); then cat "$tmp/slow.err" "$tmp/slow2.err" "$tmp/slow2.out" "$tmp/slow3.err"; fi
for v in slow slowdst slowdst2 slowdst3; do "$kindling" kill "$v" >/dev/null 2>&1; "$kindling" delete "$v" >/dev/null; done

# A GPU: `screenshot` writes what the guest drew (virtio_gpu's pattern) as
# a PNG; its pixels are checked in //tests/e2e:gpu_test.
"$kindling" create --id gpu --kernel "$gpu" --memory 64 --gpu 2d,width=320,height=240,max_mib=16 \
  --cmdline "gpu.hold_ms=600000" >/dev/null
"$kindling" start gpu >/dev/null
console_until gpu 'virtio-gpu: ok' "$tmp/gpu.txt" 200
check "screenshot: a 320x240 PNG file" \
  bash -c "'$kindling' screenshot gpu '$tmp/shot.png' | grep -q 'shot.png: 320x240, [0-9]* bytes' && [[ \$(head -c 4 '$tmp/shot.png' | tail -c 3) == PNG ]]"
check "screenshot -: the same PNG on stdout" \
  bash -c "'$kindling' screenshot gpu - >'$tmp/shot2.png' && cmp -s '$tmp/shot.png' '$tmp/shot2.png'"
check "snapshot of a GPU VM" bash -c "'$kindling' snapshot gpu '$tmp/gpusnap' | grep -q '^gpu  *RUNNING'"
check "restore it: the restored VM's screenshot is the same PNG" \
  bash -c "'$kindling' restore '$tmp/gpusnap' --id gpu2 >/dev/null && '$kindling' start gpu2 >/dev/null && '$kindling' screenshot gpu2 '$tmp/shot3.png' >/dev/null && cmp -s '$tmp/shot.png' '$tmp/shot3.png'"
"$kindling" create --id nogpu --kernel "$ticker" --memory 64 --cmdline "console=ttyS0 forever" >/dev/null
"$kindling" start nogpu >/dev/null
"$kindling" screenshot nogpu "$tmp/none.png" 2>"$tmp/err.txt"
check "screenshot of a VM without a GPU: FAILED_PRECONDITION, exit 1, no file" \
  bash -c "[[ $? -eq 1 ]] && grep -q 'FAILED_PRECONDITION: .*no GPU' '$tmp/err.txt' && [[ ! -e '$tmp/none.png' ]]"
"$kindling" create --id badgpu --kernel "$gpu" --memory 64 --gpu 2d,width=4096,height=4096,max_mib=16 \
  2>"$tmp/err.txt" >/dev/null
check "create with a framebuffer past max_mib: refused naming it" \
  bash -c "grep -q 'max_mib=16: a 4096x4096 framebuffer does not fit' '$tmp/err.txt'"
for v in gpu gpu2 nogpu; do "$kindling" kill "$v" >/dev/null; "$kindling" delete "$v" >/dev/null; done
"$kindling" delete badgpu >/dev/null 2>&1

if ((failures)); then
  echo "--- serve.log"
  cat "$tmp/serve.log"
  for log in "$tmp"/state/vms/*/vm.log; do
    [[ -f $log ]] && { echo "--- $log"; tail -20 "$log"; }
  done
fi
echo "$failures failures"
((failures == 0))
