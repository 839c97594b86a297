#!/bin/bash
# Runs a Python test with Debian's python3, which has python3-grpcio and
# python3-protobuf (tools/setup.sh installs them); a python3 earlier on
# PATH (pyenv) may not.
set -u
script=$1
shift
if ! /usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null; then
  echo "SKIP: Debian's python3-grpcio/python3-protobuf are not installed (tools/setup.sh installs them)"
  [[ ${CI:-} == true ]] && exit 1
  exit 0
fi
exec /usr/bin/python3 -u "$script" "$@"
