# Runs inside tools/nested-kvm's L1 (busybox sh): Debian's stock kernel
# booted through `kindling serve` and the CLI. Prints what the test checks;
# on a hang, where the guest's console stopped and what the daemon says.
./kindling serve --listen unix:/tmp/k.sock --state-dir /tmp/state 2>serve.log &
i=0
while [ ! -S /tmp/k.sock ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
export KINDLING_SOCKET=/tmp/k.sock
./kindling create --id linux --kernel kernel --initrd initrd.gz --memory 256 \
  --cmdline "console=ttyS0 reboot=k panic=-1 pci=off loglevel=7 kindling.powerbutton" ||
  { cat serve.log; exit 1; }
echo "created at $(cut -d' ' -f1 /proc/uptime)"
timeout 60 ./kindling start linux >/dev/null || { echo "start failed ($?)"; cat serve.log; exit 1; }
echo "started at $(cut -d' ' -f1 /proc/uptime)"
# Each CLI call execs kindling and kindling-ctl, which is slow under TCG:
# one console stream (it ends when the guest stops), bounded; the power
# button once the guest's init waits for it.
# The nested run has 240 s in all: wait at most ~100 s for the guest, so
# that what went wrong is still printed before it ends.
timeout 150 ./kindling console linux </dev/null >console.txt &
console=$!
start=$(cut -d. -f1 /proc/uptime)
while ! grep -q "waiting for the power button" console.txt &&
      [ $(($(cut -d. -f1 /proc/uptime) - start)) -lt 100 ]; do
  sleep 0.2
done
./kindling shutdown linux >/dev/null && echo "shutdown accepted"
i=0  # the guest powers off within seconds of the press; else stop waiting
while kill -0 $console 2>/dev/null && [ $i -lt 150 ]; do sleep 0.2; i=$((i + 1)); done
kill $console 2>/dev/null
wait $console
status=$?
echo "console status $status"
if [ $status -ne 0 ]; then
  echo "linux_api: the console did not end (the guest did not stop?); it ends with:"
  tail -n 25 console.txt
  ./kindling get linux
  ./kindling metrics linux
  cat serve.log /tmp/state/vms/linux/vm.log
  exit 1
fi
grep -E '^kindling-linux: ' console.txt
if ! grep -q 'waiting for the power button' console.txt; then
  echo "linux_api: the guest never waited for the button; its console ends with:"
  tail -n 40 console.txt
fi
./kindling get linux
./kindling metrics linux | grep -E '^(exits|halt_exits) '
./kindling delete linux >/dev/null && echo "deleted"
