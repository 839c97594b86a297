#!/usr/bin/env bash
# Bazel test: runs vhost_vsock_test_bin (Catch2) where /dev/vhost-vsock
# exists, else inside tools/nested-kvm with the vhost_vsock module loaded.
#   vhost_vsock_test.sh RUN_SH TEST_BIN
# A skip of run.sh's (it printed `SKIP: <reason>`) passes as a skip.
set -uo pipefail
run=$1 bin=$2
if [[ -r /dev/vhost-vsock && -w /dev/vhost-vsock ]]; then
  exec "$bin"
fi
echo "vhost_vsock_test: no /dev/vhost-vsock here; running under nested KVM"
outcome=$(mktemp)
trap 'rm -f "$outcome"' EXIT
"$run" --outcome "$outcome" --timeout 240 --module vhost_vsock --bin "$bin" -- "./$(basename "$bin")"
rc=$?
[[ $(cat "$outcome") == skip* ]] && exit 0
exit $rc
