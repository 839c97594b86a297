#!/usr/bin/env bash
# Fetches Debian's cloud kernel (a bzImage) into a cache and prints its path.
#
# Usage: tools/fetch-kernel.sh [CACHE_DIR]   (default /var/cache/kindling)
# Uses `apt-get download`, so it needs Debian's package mirrors.
set -euo pipefail
cache=${1:-/var/cache/kindling}
mkdir -p "$cache"
existing=$(ls "$cache"/vmlinuz-*-cloud-amd64 2>/dev/null | head -n1 || true)
if [[ -n $existing ]]; then echo "$existing"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
      awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[[ -n $pkg ]] || { apt-get update -qq >&2; pkg=$(apt-cache depends linux-image-cloud-amd64 |
      awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); }
[[ -n $pkg ]] || { echo "fetch-kernel: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
(cd "$work" && apt-get download -q "$pkg" >&2)
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/root"
cp "$work"/root/boot/vmlinuz-* "$cache/"
ls "$cache"/vmlinuz-*-cloud-amd64 | head -n1
