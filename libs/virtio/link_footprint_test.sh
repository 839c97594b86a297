#!/usr/bin/env bash
# What an rng-over-mmio embedder links: the dependency graph of
# //libs/virtio:rng and :mmio must not reach libs/block or the KVM part of
# libs/vcpu (only //libs/vcpu:bus). Usage: link_footprint_test.sh DEPS_FILE
set -uo pipefail
deps=$1
[[ -s $deps ]] || { echo "FAIL: empty dependency list $deps"; exit 1; }
failed=0
for must in //libs/virtio:core //libs/vcpu:bus //libs/vm-memory:vm-memory; do
  grep -qx "$must" "$deps" || { echo "FAIL: $must missing from the graph (query broken?)"; failed=1; }
done
for banned in //libs/block:block //libs/vcpu:vcpu; do
  if grep -qx "$banned" "$deps"; then
    echo "FAIL: rng over mmio links $banned"
    failed=1
  fi
done
((failed)) && { cat "$deps"; exit 1; }
echo "PASS: rng over mmio reaches none of libs/block or vcpu's KVM code"
