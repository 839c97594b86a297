#!/bin/bash
# cli_test.sh inside tools/nested-kvm on hosts with no usable /dev/kvm (where
# there is one, //tests/api:cli_test runs it directly and this one skips).
# Usage: cli_nested_test.sh CLI_TEST KINDLING KINDLING_CTL HELLO_ELF TICKER_ELF GPU_ELF PROBE_ELF POWER_ELF
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
cli_test=$1 kindling=$2 ctl=$3 hello=$4 ticker=$5 gpu=$6 probe=$7 power=$8
if [[ -c /dev/kvm ]] && { exec 3<>/dev/kvm; } 2>/dev/null; then
  echo "SKIP: this host has /dev/kvm; //tests/api:cli_test runs directly"
  exit 0
fi
outcome=${TEST_TMPDIR:-/tmp}/nested.outcome
rm -f "$outcome"
# The L1 guest has busybox only: bash, script, du and stat come along.
"$here/../../tools/nested-kvm/run.sh" --outcome "$outcome" --mem 1024 --timeout 600 \
  --bin /bin/bash --bin "$(command -v script)" --bin "$(command -v du)" \
  --bin "$(command -v stat)" --bin "$kindling" --bin "$ctl" \
  --file "$cli_test:cli_test.sh" --file "$hello:hello.elf" --file "$ticker:ticker.elf" \
  --file "$gpu:virtio_gpu.elf" --file "$probe:state_probe.elf" --file "$power:power_button.elf" --bin "$(command -v cmp)" \
  -- ./bash ./cli_test.sh ./kindling hello.elf ticker.elf virtio_gpu.elf state_probe.elf \
     power_button.elf
status=$?
[[ $(cat "$outcome" 2>/dev/null) == skip* ]] && exit 0  # run.sh printed SKIP: why
exit $status
