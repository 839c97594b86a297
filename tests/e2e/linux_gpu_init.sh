#!/bin/busybox sh
# /init of linux_gpu_test's initramfs: Debian's stock kernel loads its own
# virtio-pci and virtio-gpu (DRM) modules, lists the virtio devices with
# their drivers, waits for the DRM driver's framebuffer (fbcon draws the
# console on it), names it with its mode, and fills the screen's first
# lines with text for the host's screenshot. Lines the test reads start
# with `linux-gpu: `; a failure says `linux-gpu: FAIL <what>`. The host
# stops the VM once it has looked.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
say() { echo "linux-gpu: $*"; }
say "$(uname -r) up"
for m in $(cat /lib/modules/order); do
  out=$(timeout 20 insmod "/lib/modules/$m.ko" 2>&1) || say "FAIL insmod $m: $out"
done
i=0
while [ ! -e /sys/class/graphics/fb0 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
for d in /sys/bus/virtio/devices/*; do
  [ -e "$d" ] || continue
  drv=none
  [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
  say "$(basename "$d") device $(cat "$d/device") driver $drv"
done
if [ -e /sys/class/graphics/fb0 ]; then
  say "fb0 $(cat /sys/class/graphics/fb0/name) $(cat /sys/class/graphics/fb0/virtual_size)"
  for n in 1 2 3 4 5 6 7 8 9 10; do
    echo "KINDLING VIRTIO-GPU UNDER STOCK LINUX, LINE $n: ##########################" >/dev/tty1
  done
  say "drawn"
else
  say "FAIL no framebuffer: $(dmesg | grep -iE 'drm|virtio' | tail -n 5 | tr '\n' '|')"
fi
sleep 600
