# bench/gpu's runs as one POSIX sh script (busybox is enough), run by
# bench/gpu/run.sh on the host or inside tools/nested-kvm, in a directory
# holding what it is given:
#
#   K=./kindling Q=qemu-system-x86_64 QFW=<dir with bios-microvm.bin or "">
#   G=virtio_gpu.elf RUNS=3 FRAMES=200 W=1920 H=1080 sh cases.sh
#
# MODE=2d (default): each run boots the virtio_gpu test guest with
# gpu.bench_frames=FRAMES on a W x H scanout: kindling with --gpu 2d, QEMU
# with virtio-gpu-device (microvm, -display none). The guest times FRAMES
# full-screen TRANSFER_TO_HOST_2D + RESOURCE_FLUSH pairs; its fps is the
# figure. MODE=3d: gpu.bench3d_frames=FRAMES, FRAMES fenced virgl clears of
# a W x H render target each read back fenced: kindling with --gpu virgl
# over virtio-pci, QEMU with virtio-gpu-gl-pci on q35 and -display
# egl-headless (virglrenderer on llvmpipe in both). Runs are interleaved;
# each prints `result <vmm> <mode> <run> fps <F> status <n> t <t0> <t1>`.
LOG=${LOG:-.}
. "$(dirname "$0")/cases_lib.sh"

MODE=${MODE:-2d}

vmm_cmd_3d() {  # VMM CMDLINE
  case $1 in
    kindling) echo "$K run --kernel $G --memory 128 --transport pci" \
      "--gpu virgl,width=$W,height=$H,max_mib=128 --cmdline \"$2\"" ;;
    qemu) echo "$Q ${QFW:+-L $QFW} -M q35 -accel kvm -cpu qemu64 -m 128 -nodefaults" \
      "-no-user-config -display egl-headless,rendernode=/dev/null -serial stdio" \
      "-device isa-debug-exit,iobase=0xf4,iosize=0x04" \
      "-device virtio-gpu-gl-pci,disable-legacy=on,xres=$W,yres=$H -kernel $G -append \"$2\"" ;;
  esac
}

vmm_cmd() {  # VMM CMDLINE
  [ "$MODE" = 3d ] && { vmm_cmd_3d "$@"; return; }
  case $1 in
    kindling) echo "$K run --kernel $G --memory 128 --gpu 2d,width=$W,height=$H,max_mib=64 --cmdline \"$2\"" ;;
    qemu) echo "$Q ${QFW:+-L $QFW} -M microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on,acpi=off" \
      "-global virtio-mmio.force-legacy=false -accel kvm -cpu qemu64 -m 128 -nodefaults" \
      "-no-user-config -display none -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04" \
      "-device virtio-gpu-device,xres=$W,yres=$H -kernel $G -append \"$2\"" ;;
  esac
}

attempt() {  # VMM DIR RUN: one boot; sets $status and $figures
  out=$LOG/$1-$2-$3
  echo "=== begin $1 $2 $3"
  arg=gpu.bench_frames=$FRAMES word=bench
  [ "$MODE" = 3d ] && arg=gpu.bench3d_frames=$FRAMES word=bench3d
  eval "$(vmm_cmd $1 "$arg")" >$out.guest 2>&1 </dev/null
  status=$?
  cat $out.guest
  fps=$(sed -n "s/.*virtio-gpu: $word .* \([0-9][0-9]*\.[0-9][0-9]\) fps.*/\1/p" $out.guest | head -1)
  figures="fps ${fps:--}"
}

r=1
while [ $r -le "$RUNS" ]; do
  for vmm in kindling qemu; do one $vmm "$MODE" $r; done
  r=$((r + 1))
done
echo "=== done"
