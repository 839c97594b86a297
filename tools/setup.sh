#!/usr/bin/env bash
# Installs what kindling needs to build, test and run on Debian 12 (root).
# Idempotent: apt runs only when a package is missing.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap default-jdk-headless linux-libc-dev pkg-config python3 git iproute2
  g++ clang libclang-rt-14-dev
  libabsl-dev libboost-dev libprotobuf-dev protobuf-compiler
  libgrpc++-dev protobuf-compiler-grpc catch2 python3-grpcio python3-protobuf
  liburing-dev zlib1g-dev libzstd-dev libpng-dev
  libvirglrenderer-dev libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri
  qemu-system-x86 qemu-system-gui qemu-utils seabios python3-libvhdi libvhdi-utils
  busybox-static cpio file acpica-tools
  fio prometheus
  etcd-server golang-etcd-server-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
      echo "setup: missing packages ${missing[*]}; run as root to install them" >&2
      exit 1
    fi
    sudo=(sudo)  # not root: install through sudo (it may ask for a password)
  fi
  echo "setup: installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
