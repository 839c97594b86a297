# The virtio device cases, as one POSIX sh script (busybox is enough), run
# by virtio_test.sh in a directory holding ./kindling and the test guests —
# on the host where /dev/kvm works, else inside tools/nested-kvm. Each case
# prints `=== begin NAME`, kindling's output, `=== end NAME status N`;
# host-side checks of the disk files print `check: FAIL ...` on failure.
K=./kindling

mkdisk() {
  rm -f "$1"
  dd if=/dev/zero of="$1" bs=1024 count=4096 2>/dev/null
}
sector() { dd if="$1" bs=512 skip="$2" count=1 2>/dev/null; }
# check_sector FILE SECTOR TEXT: TEXT in that sector ("" = all zeros).
check_sector() {
  if [ -z "$3" ]; then
    [ -z "$(sector "$1" "$2" | tr -d '\000')" ] ||
      echo "check: FAIL sector $2 of $1 is not all zeros"
  else
    sector "$1" "$2" | grep -q "$3" || echo "check: FAIL sector $2 of $1 lacks '$3'"
  fi
}
run() {
  name=$1
  shift
  echo "=== begin $name"
  $K run "$@" 2>&1 </dev/null
  echo "=== end $name status $?"
}

mkdisk blk.img
run blk --kernel virtio_blk.elf --disk blk.img
check_sector blk.img 1 "kindling-blk sector 1"
check_sector blk.img 164 "kindling-blk sector 164"
check_sector blk.img 8 ""

mkdisk plain.img
run blk_plain --kernel virtio_blk.elf --disk plain.img --cmdline "blk.indirect=0 blk.event_idx=0"
check_sector plain.img 1 "kindling-blk sector 1"

mkdisk split.img
run blk_split --kernel virtio_blk.elf --disk split.img --irqchip split
check_sector split.img 164 "kindling-blk sector 164"

mkdisk ro.img
echo "read-only marker" | dd of=ro.img conv=notrunc 2>/dev/null
before=$(md5sum <ro.img)
run blk_ro --kernel virtio_blk.elf --disk ro.img,ro
[ "$(md5sum <ro.img)" = "$before" ] || echo "check: FAIL the read-only disk changed"

# A flush acknowledged to the guest survives killing the VMM right after.
mkdisk kill.img
echo "=== begin flush_kill"
$K run --kernel virtio_blk.elf --disk kill.img --cmdline blk.hold >kill.out 2>&1 </dev/null &
pid=$!
i=0
while ! grep -q "virtio-blk: flushed" kill.out && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
kill -9 $pid
wait $pid
status=$?
cat kill.out
echo "=== end flush_kill status $status"
check_sector kill.img 1 "kindling-blk sector 1"
check_sector kill.img 164 "kindling-blk sector 164"

run misc --kernel virtio_misc.elf --rng --console virtio

mkdisk hostile.img
run hostile --kernel virtio_hostile.elf --disk hostile.img --rng

# The same guests over virtio-pci (modern, MSI-X).
mkdisk pci.img
run blk_pci --kernel virtio_blk.elf --disk pci.img --transport pci
check_sector pci.img 164 "kindling-blk sector 164"
check_sector pci.img 8 ""

run misc_pci --kernel virtio_misc.elf --rng --console virtio --transport pci

mkdisk hostile_pci.img
run hostile_pci --kernel virtio_hostile.elf --disk hostile_pci.img --rng --transport pci
