#!/usr/bin/env bash
# Bad input to `kindling run` gives one clear line on stderr and exit 125,
# never a crash. Runs with or without KVM (every case fails before the VM
# would start, or at opening /dev/kvm with a message naming it).
set -uo pipefail
kindling=$1 guest=$2
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/errors.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
printf '{"cpuid_modifiers": [' >"$tmp/broken.json"
printf '{"cpuid_modifiers":[{"leaf":"0x1","modifiers":[{"register":"eax","bitmap":"0b012"}]}]}' >"$tmp/badbits.json"
head -c 4096 /dev/urandom >"$tmp/random.bin"
: >"$tmp/empty"
failed=0

# expect_error DESCRIPTION REGEX ARGS...: exit 125, one stderr line matching.
expect_error() {
  local what=$1 want=$2
  shift 2
  timeout 20 "$kindling" "$@" </dev/null >"$tmp/out" 2>"$tmp/err"
  local status=$? lines
  lines=$(wc -l <"$tmp/err")
  if [[ $status -ne 125 ]]; then
    echo "FAILED: $what: exit $status, want 125 ($(cat "$tmp/err"))"
    failed=1
  elif [[ $lines -ne 1 ]] || ! grep -qE "^kindling: error: .*$want" "$tmp/err"; then
    echo "FAILED: $what: stderr should be one line matching '$want', got:"
    cat "$tmp/err"
    failed=1
  else
    echo "ok: $what: $(cat "$tmp/err")"
  fi
}

expect_error "missing kernel file" "/nonexistent/vmlinux" run --kernel /nonexistent/vmlinux
expect_error "kernel is a directory" "not a regular file" run --kernel "$tmp"
expect_error "kernel is not ELF or bzImage" "neither an ELF file nor a bzImage" run --kernel "$tmp/random.bin"
expect_error "empty kernel" "neither an ELF" run --kernel "$tmp/empty"
expect_error "missing initrd" "initrd /nonexistent" run --kernel "$guest" --initrd /nonexistent
expect_error "too much memory" "more than this host" run --kernel "$guest" --memory 100000000
expect_error "too little memory" "at least" run --kernel "$guest" --memory 1
expect_error "memory not a number" "--memory 'lots'" run --kernel "$guest" --memory lots
expect_error "zero cpus" "--cpus 0" run --kernel "$guest" --cpus 0
expect_error "too many cpus" "--cpus 999" run --kernel "$guest" --cpus 999
expect_error "template missing" "cannot read CPU template" run --kernel "$guest" --cpu-template /nonexistent.json
expect_error "template not JSON" "not valid JSON" run --kernel "$guest" --cpu-template "$tmp/broken.json"
expect_error "template bad bitmap" "bitmap" run --kernel "$guest" --cpu-template "$tmp/badbits.json"
expect_error "pv-eoi bad value" "expected on or off" run --kernel "$guest" --pv-eoi maybe
expect_error "unknown option" "unknown option '--frobnicate'" run --kernel "$guest" --frobnicate
expect_error "unknown command" "unknown command 'fly'" fly
expect_error "no kernel" "--kernel is required" run
expect_error "vsock: both host sides" "one host side" run --kernel "$guest" --vsock cid=3,vhost,uds=$tmp/v.sock
expect_error "host CPU template: broken JSON" "broken.json" run --kernel "$guest" --host-cpu-template "$tmp/broken.json"
expect_error "host CPU template with --incoming: a missing file" "/nonexistent.json" \
  run --incoming "unix:/tmp/kindling-never-$$.sock" --host-cpu-template /nonexistent.json
expect_error "command line too long" "command line" run --kernel "$guest" --cmdline "$(head -c 70000 /dev/zero | tr '\0' a)"

# A destination waiting for a migration obeys SIGTERM (128 + 15), no KVM needed.
sock_dir=$(mktemp -d /tmp/kindling-wait.XXXXXX)  # short: a unix socket path is at most 107 bytes
"$kindling" run --incoming "unix:$sock_dir/wait.sock" </dev/null >/dev/null 2>"$tmp/err" &
waiting=$!
for _ in $(seq 50); do [[ -S $sock_dir/wait.sock ]] && break; sleep 0.1; done
kill -TERM "$waiting"
timeout 5 tail --pid="$waiting" -f /dev/null
wait "$waiting"
status=$?
rm -rf "$sock_dir"
if [[ $status -ne 143 ]] || ! grep -q "stopped by signal 15 while waiting for a migration" "$tmp/err"; then
  echo "FAILED: SIGTERM while waiting for a migration: exit $status ($(cat "$tmp/err"))"
  failed=1
else
  echo "ok: SIGTERM while waiting for a migration: exit 143"
fi

if [[ ! -c /dev/kvm ]]; then
  expect_error "no /dev/kvm" "cannot open /dev/kvm" run --kernel "$guest"
fi
if [[ -c /dev/kvm && ! -e /dev/vhost-vsock ]]; then
  expect_error "no /dev/vhost-vsock" "open /dev/vhost-vsock .*vhost_vsock module" \
    run --kernel "$guest" --vsock cid=3,vhost
fi
exit $failed
