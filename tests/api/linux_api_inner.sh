# Runs inside tools/nested-kvm's L1 (busybox sh): Debian's stock kernel
# booted through `kindling serve` and the CLI. Prints what the test checks.
./kindling serve --listen unix:/tmp/k.sock --state-dir /tmp/state 2>serve.log &
i=0
while [ ! -S /tmp/k.sock ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
export KINDLING_SOCKET=/tmp/k.sock
./kindling create --id linux --kernel kernel --initrd initrd.gz --memory 256 \
  --cmdline "console=ttyS0 reboot=k panic=-1 pci=off loglevel=7" || { cat serve.log; exit 1; }
./kindling start linux >/dev/null || exit 1
./kindling console linux </dev/null >console.txt
echo "console status $?"
grep -E '^kindling-linux: ' console.txt
./kindling get linux
./kindling metrics linux | grep -E '^(exits|halt_exits) '
./kindling delete linux >/dev/null && echo "deleted"
