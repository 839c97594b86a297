#!/usr/bin/env bash
# Fetches Debian's cloud kernel (a bzImage) into a cache and prints its path.
#
# Usage: tools/fetch-kernel.sh [--modules] [CACHE_DIR]   (default /var/cache/kindling)
#
# --modules  also extract, from the same package, the virtio driver modules
#            (virtio_mmio, virtio_pci, virtio_blk, virtio_console, virtio-rng,
#            virtio_net, virtio_balloon, vmw_vsock_virtio_transport and what
#            they depend on) into CACHE_DIR/modules-<release>/, and
#            print that directory on a second line. It holds the .ko files
#            (decompressed), `order` (module names, dependencies first; ones
#            built into the kernel are left out) and `builtin` (the wanted
#            modules that are built in). The cached vmlinuz is replaced by the
#            package's when they differ, so kernel and modules always match.
# Uses `apt-get download`, so it needs Debian's package mirrors (once).
set -euo pipefail
modules=0
if [[ ${1:-} == --modules ]]; then modules=1; shift; fi
cache=${1:-/var/cache/kindling}
# The drivers a stock kernel needs for kindling's devices, by module name.
# button + evdev: the ACPI power button as /dev/input/event* (ShutdownVm).
WANTED=(virtio_mmio virtio_pci virtio_blk virtio_console virtio_rng virtio_net virtio_balloon
        vmw_vsock_virtio_transport button evdev)
LAYOUT=kindling-modules-3
mkdir -p "$cache"
existing=$(ls "$cache"/vmlinuz-*-cloud-amd64 2>/dev/null | head -n1 || true)
if [[ -n $existing ]] && { ((!modules)) ||
     { moddir=$cache/modules-${existing##*/vmlinuz-}
       grep -qx "$LAYOUT" "$moddir/READY" 2>/dev/null &&
       [[ $(sha256sum <"$existing") == "$(cat "$moddir/vmlinuz.sha256")" ]]; }; }; then
  echo "$existing"
  ((modules)) && echo "$moddir"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -n $existing ]]; then
  # Modules for the kernel already cached: the same release's package.
  pkg=linux-image-${existing##*/vmlinuz-}
else
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [[ -n $pkg ]] || { apt-get update -qq >&2; pkg=$(apt-cache depends linux-image-cloud-amd64 |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); }
  [[ -n $pkg ]] || { echo "fetch-kernel: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
fi
(cd "$work" && apt-get download -q "$pkg" >&2) ||
  { echo "fetch-kernel: apt-get download $pkg failed" >&2; exit 1; }
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/root"
kernel=$(ls "$work"/root/boot/vmlinuz-* | head -n1)
release=${kernel##*/vmlinuz-}
if ! cmp -s "$kernel" "$cache/vmlinuz-$release"; then
  cp "$kernel" "$cache/.vmlinuz-$release.$$" && mv "$cache/.vmlinuz-$release.$$" "$cache/vmlinuz-$release"
fi
echo "$cache/vmlinuz-$release"
((modules)) || exit 0

# ------------------------------------------------------------- the modules
modroot=$work/root/lib/modules/$release
[[ -d $modroot ]] || { echo "fetch-kernel: $pkg has no lib/modules/$release" >&2; exit 1; }
new=$work/modules
mkdir -p "$new"
order=() builtin=()
# A module's file: foo_bar may be foo-bar.ko, possibly compressed.
find_ko() {
  local n
  for n in "$1" "${1//_/-}"; do
    find "$modroot" \( -name "$n.ko" -o -name "$n.ko.xz" -o -name "$n.ko.zst" -o -name "$n.ko.gz" \) |
      head -n1 | grep . && return 0
  done
  return 1
}
is_builtin() {  # modules.builtin lists kernel/drivers/.../name.ko
  grep -qE "/(${1}|${1//_/-})\.ko$" "$modroot/modules.builtin" 2>/dev/null
}
# Dependencies first, from each module's .modinfo `depends=` (the package
# ships no modules.dep: depmod writes it at install time).
add() {
  local m=${1//-/_} f out dep
  [[ " ${order[*]-} ${builtin[*]-} " == *" $m "* ]] && return 0
  if ! f=$(find_ko "$m"); then
    is_builtin "$m" && { builtin+=("$m"); return 0; }
    echo "fetch-kernel: module $m is neither in $pkg nor built in" >&2
    return 1
  fi
  out=$new/$m.ko
  case $f in
    *.xz) xz -dc "$f" >"$out" ;;
    *.zst) zstd -qdc "$f" >"$out" ;;
    *.gz) gzip -dc "$f" >"$out" ;;
    *) cp "$f" "$out" ;;
  esac
  for dep in $(tr '\0' '\n' <"$out" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '); do
    add "$dep" || return 1
  done
  order+=("$m")
}
for m in "${WANTED[@]}"; do add "$m"; done
for m in ${order[@]+"${order[@]}"}; do echo "$m"; done >"$new/order"
for m in ${builtin[@]+"${builtin[@]}"}; do echo "$m"; done >"$new/builtin"
sha256sum <"$cache/vmlinuz-$release" >"$new/vmlinuz.sha256"
echo "$pkg $(dpkg-deb -f "$work"/"$pkg"_*.deb Version)" >"$new/package"
echo "$LAYOUT" >"$new/READY"
moddir=$cache/modules-$release
rm -rf "$moddir.old"
[[ -e $moddir ]] && mv "$moddir" "$moddir.old"
cp -r "$new" "$moddir"
rm -rf "$moddir.old"
echo "$moddir"
