#!/usr/bin/env bash
# Run a command inside a QEMU/TCG guest (L1) that has a working /dev/kvm.
#
# QEMU's TCG emulates AMD SVM with nested paging, so Debian's own kernel with
# kvm.ko + kvm-amd.ko gives L1 a real /dev/kvm even on hosts with no /dev/kvm
# at all. See README.md in this directory for timings and caveats.
#
#   run.sh [--mem MIB] [--cpus N] [--timeout SEC] [--cpu MODEL]
#          [--bin PATH]... [--lib PATH]... [--gl] [--file SRC[:NAME]]...
#          [--env NAME=VALUE]...
#          [--module NAME]...
#          -- COMMAND ARGS...
#   run.sh --prepare        download and unpack kernel/modules/busybox only
#   run.sh --print-kernel-dir   prepare, then print the cache directory that
#               holds vmlinux (Debian's kernel as a PVH-bootable ELF), the
#               busybox, base.cpio and the modules; for tests that want a
#               stock kernel to boot as an L2 guest
#
# --bin PATH    a program (static or dynamic) copied to /work/<basename>, plus
#               every library `ldd` names and the dynamic loader, at their
#               absolute paths (LD_LIBRARY_PATH covers them)
# --lib PATH    a shared library (or any file) copied to the same absolute
#               path, with every library `ldd` names; its directory joins
#               LD_LIBRARY_PATH (what a program dlopen()s: GL drivers)
# --gl          what a virglrenderer process (kindling-gpu) opens at run
#               time to render on Mesa's llvmpipe: the EGL and GL loaders,
#               Mesa's EGL and swrast DRI driver with their libraries, the
#               EGL vendor file; sets LIBGL_ALWAYS_SOFTWARE=1
# --file SRC[:NAME]  a file or directory copied to /work/NAME (default: basename)
# --outcome FILE  write how the run ended to FILE (see Exit status)
# --module NAME  also load this kernel module (and its dependencies) in the
#               guest; cached: tun, vhost_net, vhost_vsock, virtio_pci,
#               virtio-gpu
# COMMAND runs with cwd /work and PATH=/work:/bin (busybox), /dev/kvm present.
#
# Exit status: COMMAND's status, or
#   77   SKIP: the kernel/busybox packages cannot be had (no cache, no network)
#        or qemu-system-x86_64 is missing; prints `SKIP: <reason>`. Under
#        CI=true this is a harness failure instead (tools/setup.sh installs
#        QEMU, and CI reaches Debian's packages).
#   124  timeout: the guest did not finish within --timeout; QEMU was killed
#   125  harness failure (bad arguments, QEMU failed, guest died without
#        reporting, e.g. kernel panic or out of memory)
#   126  /dev/kvm could not be had inside the guest; the reason is printed
# COMMAND may exit with any of these numbers too, so callers that must tell
# them apart pass --outcome FILE: run.sh writes one line there, `exit N`
# (COMMAND ran and exited N), `skip REASON`, `timeout`, `nokvm` or `harness`.
# Harness messages go to stderr prefixed `nested-kvm:`; the guest's console
# (COMMAND's stdout and stderr, merged) goes to stdout.
#
# Environment:
#   KINDLING_NESTED_KVM_CACHE   cache dir (default ${XDG_CACHE_HOME:-/var/cache}/
#                               kindling-nested-kvm; a temporary one if that is
#                               not writable and not yet prepared)
#   KINDLING_NESTED_KVM_KERNEL  Debian kernel package (default: what
#                               linux-image-amd64 depends on, or the one
#                               already cached)
#   KINDLING_NESTED_KVM_PARALLEL=1  do not serialise runs (by default one
#                               nested-KVM QEMU runs at a time per host)
#   KINDLING_NESTED_KVM_VERBOSE=1   show the kernel's boot messages
set -uo pipefail

EX_SKIP=77 EX_TIMEOUT=124 EX_HARNESS=125 EX_NOKVM=126
# --gl: dlopen()ed by libepoxy, glvnd and Mesa (ldd does not see them).
GL_FILES=(/usr/lib/x86_64-linux-gnu/libEGL.so.1 /usr/lib/x86_64-linux-gnu/libEGL_mesa.so.0
          /usr/lib/x86_64-linux-gnu/libGL.so.1 /usr/lib/x86_64-linux-gnu/dri/swrast_dri.so
          /usr/share/glvnd/egl_vendor.d/50_mesa.json)
# Bump when the cache's contents change; an older cache is rebuilt.
LAYOUT=nested-kvm-cache-3
# Modules cached besides the KVM ones, for --module and for tests that boot
# the cached kernel as an L2 guest (virtio-pci and the virtio-gpu DRM driver:
# tests/e2e/linux_gpu_test).
EXTRA_MODULES=(tun vhost_net vhost_vsock virtio_pci virtio-gpu)

msg() { echo "nested-kvm: $*" >&2; }
outcome_file=
# finish STATUS WORDS...: records WORDS as the outcome (--outcome) and exits.
finish() {
  local status=$1
  shift
  [[ -n $outcome_file ]] && echo "$*" >"$outcome_file"
  exit "$status"
}
die() { msg "ERROR: $*"; finish "$EX_HARNESS" harness; }
skip() {
  if [[ ${CI:-} == true ]]; then
    echo "FAILED: nested-kvm: $* (CI=true: a skip CI's own setup should prevent)"
    die "$*"
  fi
  echo "SKIP: $*"
  msg "skipping: $*"
  finish "$EX_SKIP" skip "$*"
}

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; finish "$EX_HARNESS" harness; }

mem=1024 cpus=1 timeout_s=300 cpu_model=${KINDLING_NESTED_KVM_CPU:-max} prepare_only=0
bins=() libs=() files=() envs=() modules=()
while (($#)); do
  case $1 in
    --mem) mem=${2:?}; shift 2 ;;
    --cpus) cpus=${2:?}; shift 2 ;;
    --timeout) timeout_s=${2:?}; shift 2 ;;
    --cpu) cpu_model=${2:?}; shift 2 ;;
    --bin) bins+=("${2:?}"); shift 2 ;;
    --lib) libs+=("${2:?}"); shift 2 ;;
    --gl) libs+=("${GL_FILES[@]}"); envs+=(LIBGL_ALWAYS_SOFTWARE=1); shift ;;
    --file) files+=("${2:?}"); shift 2 ;;
    --env) envs+=("${2:?}"); shift 2 ;;
    --module) modules+=("${2:?}"); shift 2 ;;
    --outcome) outcome_file=${2:?}; shift 2 ;;
    --prepare) prepare_only=1; shift ;;
    --print-kernel-dir) prepare_only=2; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    *) msg "unknown argument: $1"; usage ;;
  esac
done
[[ $mem =~ ^[0-9]+$ && $cpus =~ ^[0-9]+$ && $timeout_s =~ ^[0-9]+$ ]] ||
  die "--mem, --cpus and --timeout take whole numbers"
((mem >= 128)) || die "--mem $mem: the guest needs at least 128 MiB (the kernel alone is 65 MB)"
((prepare_only || $# > 0)) || { msg "no COMMAND given"; usage; }

command -v qemu-system-x86_64 >/dev/null ||
  skip "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
for t in xz flock timeout ldd; do
  command -v "$t" >/dev/null || die "needs '$t' on the host"
done

# init.sh lives next to this script (also when run through a Bazel runfiles
# symlink or an sh_binary copy).
here=$(dirname "$(readlink -f "$0")")
init_sh=
for d in "$here" "$(dirname "$0")" "${RUNFILES_DIR:-$0.runfiles}/kindling/tools/nested-kvm"; do
  [[ -f $d/init.sh ]] && { init_sh=$d/init.sh; break; }
done
[[ -n $init_sh ]] || die "cannot find init.sh next to $0"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nested-kvm.XXXXXX") || die "mktemp failed"
qemu_pid= awk_pid=
cleanup() {
  # `timeout` passes the TERM on to QEMU.
  [[ -n $qemu_pid ]] && kill -TERM "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  [[ -n $awk_pid ]] && kill -TERM "$awk_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the cache
cache=${KINDLING_NESTED_KVM_CACHE:-${XDG_CACHE_HOME:-/var/cache}/kindling-nested-kvm}
if ! mkdir -p "$cache" 2>/dev/null || [[ ! -w $cache ]]; then
  if ! grep -qx "$LAYOUT" "$cache"/*/READY 2>/dev/null; then
    msg "cache $cache is not writable; using a temporary one (set KINDLING_NESTED_KVM_CACHE)"
    cache=$tmp/cache
    mkdir -p "$cache"
  fi
fi

# The kernel package: explicit, else the one already cached, else whatever
# linux-image-amd64 depends on now.
kpkg=${KINDLING_NESTED_KVM_KERNEL:-}
if [[ -z $kpkg && -r $cache/kernel-package ]]; then
  kpkg=$(<"$cache/kernel-package")
  grep -qx "$LAYOUT" "$cache/$kpkg/READY" 2>/dev/null || kpkg=
fi
if [[ -z $kpkg ]]; then
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
         sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1)
  [[ -n $kpkg ]] || skip "cannot resolve linux-image-amd64 with apt-cache (no apt lists? run apt-get update)"
fi
kdir=$cache/$kpkg

# Decompress the bzImage payload to an ELF vmlinux: QEMU boots it through
# its PVH note, which saves the ~3 s the decompressor needs under TCG.
extract_vmlinux() {  # bzImage out
  local magic off
  for magic in '\xfd7zXZ\x00:xz -dc --single-stream' '\x28\xb5\x2f\xfd:zstd -dc' \
               '\x1f\x8b\x08:gzip -dc'; do
    off=$(LC_ALL=C grep -obUaP "${magic%%:*}" "$1" | head -1 | cut -d: -f1)
    [[ -n $off ]] || continue
    tail -c +$((off + 1)) "$1" | ${magic#*:} >"$2" 2>/dev/null
    [[ $(head -c 4 "$2" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] && return 0
  done
  return 1
}

# Module and its dependencies (from .modinfo `depends=`), dependencies first.
resolve_modules() {  # modroot name...
  local root=$1 m f deps d; shift
  for m in "$@"; do
    [[ " ${resolved[*]-} " == *" $m "* ]] && continue
    f=$(find "$root" -name "$m.ko" -o -name "${m//-/_}.ko" -o -name "${m//_/-}.ko" | head -1)
    [[ -n $f ]] || { msg "module $m not found in $kpkg"; return 1; }
    deps=$(tr '\0' '\n' <"$f" | sed -n 's/^depends=//p' | head -1)
    for d in ${deps//,/ }; do resolve_modules "$root" "$d" || return 1; done
    resolved+=("$m")
    modfiles+=("$f")
    moddeps+=("$m ${deps//,/ }")
  done
}

prepare() {
  grep -qx "$LAYOUT" "$kdir/READY" 2>/dev/null && return 0
  local dl=$tmp/dl bb
  mkdir -p "$dl"
  msg "preparing $kdir (apt-get download $kpkg busybox-static)"
  if ! (cd "$dl" && apt-get download "$kpkg" busybox-static) >"$dl/log" 2>&1; then
    skip "apt-get download $kpkg busybox-static failed: $(grep -E '^(E|Err|W):|Could not|Temporary failure|Failed' "$dl/log" | head -3 | tr '\n' ' ')"
  fi
  mkdir -p "$dl/x"
  for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$dl/x" || die "dpkg-deb -x $deb failed"; done
  local new=$cache/.new.$$
  rm -rf "$new"
  mkdir -p "$new/root/bin" "$new/root/lib/modules" "$new/root/dev" "$new/root/proc" \
           "$new/root/sys" "$new/root/tmp" "$new/root/work" "$new/root/nested"
  extract_vmlinux "$dl"/x/boot/vmlinuz-* "$new/vmlinux" || die "cannot unpack vmlinux from $kpkg"
  bb=$dl/x/bin/busybox
  [[ -x $bb ]] || die "busybox-static has no /bin/busybox"
  cp "$bb" "$new/root/bin/busybox"
  local resolved=() modfiles=() moddeps=() i
  resolve_modules "$dl/x/lib/modules" kvm-amd kvm-intel || die "module dependencies"
  echo "${resolved[*]}" >"$new/root/lib/modules/order"
  resolve_modules "$dl/x/lib/modules" "${EXTRA_MODULES[@]}" || die "module dependencies"
  for i in "${!modfiles[@]}"; do
    cp "${modfiles[$i]}" "$new/root/lib/modules/${resolved[$i]}.ko"
  done
  printf '%s\n' "${moddeps[@]}" >"$new/moddeps"
  cp "$init_sh" "$new/root/init" && chmod 755 "$new/root/init" ||
    die "cannot install init.sh"
  (cd "$new/root" && find . | "$bb" cpio -o -H newc 2>/dev/null) >"$new/base.cpio" ||
    die "cpio failed"
  echo "$kpkg" >"$new/kernel-package"
  ls "$dl"/*.deb | xargs -n1 basename >"$new/packages"
  echo "$LAYOUT" >"$new/READY"
  rm -rf "$kdir" && mv "$new" "$kdir" || die "cannot install $kdir"
  echo "$kpkg" >"$cache/kernel-package"
  msg "prepared $kdir ($(cat "$kdir/packages" | tr '\n' ' '))"
}

exec 8<"$cache" || die "cannot open $cache"
flock -w 600 8 || die "timed out waiting for the cache lock on $cache"
prepare
# init.sh may have changed since the cache was built: refresh the base cpio.
if ! cmp -s "$init_sh" "$kdir/root/init"; then
  if [[ -w $kdir ]]; then
    cp "$init_sh" "$kdir/root/init" && chmod 755 "$kdir/root/init" &&
      (cd "$kdir/root" && find . | "$kdir/root/bin/busybox" cpio -o -H newc 2>/dev/null) \
        >"$kdir/base.cpio.new" && mv "$kdir/base.cpio.new" "$kdir/base.cpio" ||
      die "cannot refresh $kdir/base.cpio"
  else
    msg "warning: $kdir is read-only and has an older init.sh"
  fi
fi
flock -u 8
if ((prepare_only == 2)); then
  [[ $cache == "$tmp/cache" ]] && die "--print-kernel-dir needs a writable cache (KINDLING_NESTED_KVM_CACHE)"
  echo "$kdir"
  exit 0
fi
((prepare_only)) && { msg "ready: $kdir"; exit 0; }

# -------------------------------------------------------- per-run payload
pl=$tmp/payload
mkdir -p "$pl/work" "$pl/nested"
libdirs=()
squote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
add_path() {  # copy a host file to the same absolute path in the payload
  local src=$1
  [[ -e $pl$src ]] && return 0
  mkdir -p "$pl$(dirname "$src")"
  cp -L "$src" "$pl$src" || die "cannot copy $src"
}
# add_deps FILE: every library ldd names for FILE, at its absolute path.
add_deps() {
  local ldd_out lib
  ldd_out=$(ldd "$1" 2>&1) || return 0  # static: nothing to add
  while read -r lib; do
    [[ -n $lib ]] || continue
    add_path "$lib"
    libdirs+=("$(dirname "$lib")")
  done < <(sed -n -e 's/^.*=> \(\/[^ ]*\) (0x.*$/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (0x.*$/\1/p' <<<"$ldd_out")
  if grep -q 'not found' <<<"$ldd_out"; then
    die "$1: ldd cannot resolve: $(grep 'not found' <<<"$ldd_out" | tr -s ' \t' ' ')"
  fi
}
for b in ${bins[@]+"${bins[@]}"}; do
  [[ -f $b ]] || die "--bin $b: no such file"
  name=$(basename "$b")
  [[ -e $pl/work/$name ]] && die "--bin $b: /work/$name already taken"
  cp -L "$b" "$pl/work/$name" && chmod +x "$pl/work/$name" || die "cannot copy $b"
  add_deps "$b"
done
for l in ${libs[@]+"${libs[@]}"}; do
  [[ -f $l && $l == /* ]] || die "--lib $l: want an absolute path to a file"
  add_path "$l"
  libdirs+=("$(dirname "$l")")
  add_deps "$l"
done
for f in ${files[@]+"${files[@]}"}; do
  src=${f%%:*} name=$(basename "${f%%:*}")
  [[ $f == *:* ]] && name=${f#*:}
  [[ -e $src ]] || die "--file $src: no such file"
  [[ -e $pl/work/$name ]] && die "--file $f: /work/$name already taken"
  mkdir -p "$(dirname "$pl/work/$name")"
  cp -a -L "$src" "$pl/work/$name" || die "cannot copy $src"
done
# --module: dependencies first, from the cache's moddeps ("name deps...").
load=()
add_module() {
  local m=${1//-/_} line d
  [[ " ${load[*]-} " == *" $m "* ]] && return 0
  line=$(grep -m1 -E "^($m|${m//_/-}) " "$kdir/moddeps" || grep -m1 -x -E "$m|${m//_/-}" "$kdir/moddeps") ||
    die "--module $1: not in the cache (cached: $(cut -d' ' -f1 "$kdir/moddeps" | tr '\n' ' '))"
  for d in ${line#* }; do [[ $d == "${line%% *}" ]] || add_module "$d"; done
  load+=("${line%% *}")
}
for m in ${modules[@]+"${modules[@]}"}; do add_module "$m"; done
echo "${load[*]-}" >"$pl/nested/modules"
{
  echo "export PATH=/work:/bin"
  if ((${#libdirs[@]})); then
    printf 'export LD_LIBRARY_PATH=%s\n' "$(squote "$(printf '%s\n' "${libdirs[@]}" | sort -u | paste -sd:)")"
  fi
  for e in ${envs[@]+"${envs[@]}"}; do
    [[ $e == [A-Za-z_]*=* ]] || die "--env $e: want NAME=VALUE"
    printf 'export %s=%s\n' "${e%%=*}" "$(squote "${e#*=}")"
  done
} >"$pl/nested/env"
{
  printf '%s' 'exec'
  for a in "$@"; do printf ' %s' "$(squote "$a")"; done
  echo
} >"$pl/nested/cmd"
(cd "$pl" && find . -mindepth 1 | "$kdir/root/bin/busybox" cpio -o -H newc 2>/dev/null) >"$tmp/payload.cpio" ||
  die "cpio failed"
cat "$kdir/base.cpio" "$tmp/payload.cpio" >"$tmp/initrd" || die "cannot write initrd"
rm -rf "$pl" "$tmp/payload.cpio"

# ---------------------------------------------------------------- the run
if [[ ${KINDLING_NESTED_KVM_PARALLEL:-0} != 1 ]]; then
  { exec 9>>/tmp/kindling-nested-kvm.run.lock; } 2>/dev/null || exec 9>>"$tmp/run.lock"
  if ! flock -n 9; then
    msg "waiting for another nested-KVM run to finish (KINDLING_NESTED_KVM_PARALLEL=1 skips this)"
    flock -w 1800 9 || die "timed out waiting for the run lock"
  fi
fi

accel=tcg
((cpus > 1)) && accel=tcg,thread=multi
loglevel="quiet loglevel=1"
[[ ${KINDLING_NESTED_KVM_VERBOSE:-0} == 1 ]] && loglevel="loglevel=7"
# q35 (HPET, ACPI PM timer: the kernel boots whatever the TSC calibration
# does under TCG) with qboot instead of SeaBIOS (~0.1 s instead of ~3 s).
firmware=()
[[ -f /usr/share/qemu/qboot.rom ]] && firmware=(-bios /usr/share/qemu/qboot.rom)
qemu=(qemu-system-x86_64 -accel "$accel"
  -M q35 "${firmware[@]}" -cpu "$cpu_model"
  -smp "$cpus" -m "$mem" -nodefaults -no-user-config -display none -monitor none
  -serial stdio -no-reboot -kernel "$kdir/vmlinux" -initrd "$tmp/initrd"
  -append "console=ttyS0 $loglevel panic=-1 nokaslr mitigations=off")
msg "booting $kpkg under TCG (-cpu $cpu_model, $cpus vCPU, $mem MiB, timeout ${timeout_s}s)"
started=$(date +%s.%N)
# The guest's init prints `NESTED-EXIT=<code>` (COMMAND's status) or
# `NESTED-KVM-UNAVAILABLE: <why>`; awk passes everything else through.
mkfifo "$tmp/console" || die "mkfifo failed"
awk -v res="$tmp/result" '
    done { next }
    /NESTED-EXIT=[0-9]+$/ {
      i = index($0, "NESTED-EXIT="); pre = substr($0, 1, i - 1)
      if (pre != "") { printf "%s", pre; fflush() }
      print substr($0, i + 12) > res; close(res); done = 1; next }
    /NESTED-KVM-UNAVAILABLE: / {
      print "nokvm " substr($0, index($0, "NESTED-KVM-UNAVAILABLE: ") + 24) > res
      close(res); done = 1; next }
    /NESTED-ERROR: / {
      print "error " substr($0, index($0, "NESTED-ERROR: ") + 14) > res
      close(res); done = 1; next }
    /^nested-kvm: / { print > "/dev/stderr"; fflush("/dev/stderr"); next }
    { print; fflush() }' <"$tmp/console" &
awk_pid=$!
timeout -k 5 "$timeout_s" "${qemu[@]}" </dev/null >"$tmp/console" 2>"$tmp/qemu.err" &
qemu_pid=$!
wait "$qemu_pid"
qrc=$?
qemu_pid=
wait "$awk_pid"
awk_pid=
elapsed=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
result=$(cat "$tmp/result" 2>/dev/null || true)

if [[ $result =~ ^[0-9]+$ ]]; then
  ((qrc == 124 || qrc == 137)) && msg "note: QEMU had to be killed after the command finished"
  msg "command exited $result (${elapsed}s wall)"
  finish "$result" exit "$result"
fi
if [[ $result == nokvm* ]]; then
  msg "/dev/kvm unavailable inside the guest: ${result#nokvm }"
  finish "$EX_NOKVM" nokvm
fi
if [[ $result == error* ]]; then
  msg "ERROR inside the guest: ${result#error }"
  finish "$EX_HARNESS" harness
fi
if ((qrc == 124 || qrc == 137)); then
  msg "TIMEOUT: guest did not finish within ${timeout_s}s; QEMU killed (raise --timeout?)"
  finish "$EX_TIMEOUT" timeout
fi
msg "ERROR: guest ended without reporting an exit status (QEMU status $qrc, ${elapsed}s):"
sed 's/^/nested-kvm:   qemu: /' "$tmp/qemu.err" >&2
msg "  kernel panic, out of memory (--mem), or a crash of init; KINDLING_NESTED_KVM_VERBOSE=1 shows the boot log"
finish "$EX_HARNESS" harness
