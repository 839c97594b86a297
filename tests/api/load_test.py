"""Load: 50 create/start/wait-for-exit/delete cycles from 8 client threads
against one `kindling serve`; afterwards the daemon holds no more file
descriptors, threads, child processes or memory than after a warm-up.

Usage: load_test.py KINDLING HELLO_ELF PYTHON_STUBS_DIR
"""
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time

KINDLING, HELLO, STUBS = sys.argv[1:4]
sys.path.insert(0, STUBS)
import grpc  # noqa: E402
from kindling.v1 import vm_pb2, vm_pb2_grpc  # noqa: E402

CYCLES, THREADS, WARMUP = 50, 8, 8


def config():
    return vm_pb2.VmConfig(kernel=HELLO, vcpus=1, memory_mib=32,
                           irqchip=vm_pb2.IRQCHIP_FULL, console=vm_pb2.CONSOLE_SERIAL,
                           transport=vm_pb2.TRANSPORT_MMIO, virtqueue=vm_pb2.VIRTQUEUE_SPLIT)


def cycle(stub, i):
    vm = stub.CreateVm(vm_pb2.CreateVmRequest(config=config(), vm_id=f"load-{i}"))
    stub.StartVm(vm_pb2.VmRef(vm_id=vm.vm_id))
    deadline = time.time() + 60
    while time.time() < deadline:
        got = stub.GetVm(vm_pb2.VmRef(vm_id=vm.vm_id))
        if got.state == vm_pb2.VM_STATE_STOPPED:
            break
        time.sleep(0.02)
    stub.DeleteVm(vm_pb2.VmRef(vm_id=vm.vm_id))
    return got.state == vm_pb2.VM_STATE_STOPPED and got.exit_status.code == 0


def usage(pid):
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    children = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1] == str(pid):
                    children += 1
            except OSError:
                pass
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(status["Threads"]),
            "children": children, "rss_kib": int(status["VmRSS"].split()[0])}


def run(stub, first, n):
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda i: cycle(stub, i), range(first, first + n)))


def main():
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("SKIP: no usable /dev/kvm")
        return 0
    with tempfile.TemporaryDirectory(prefix="kindling-load-") as tmp:
        sock = os.path.join(tmp, "k.sock")
        proc = subprocess.Popen([KINDLING, "serve", "--listen", "unix:" + sock,
                                 "--state-dir", os.path.join(tmp, "state")])
        try:
            ch = grpc.insecure_channel("unix:" + sock)
            grpc.channel_ready_future(ch).result(timeout=20)
            stub = vm_pb2_grpc.VmServiceStub(ch)
            warm = run(stub, 0, WARMUP)
            time.sleep(0.5)
            before = usage(proc.pid)
            t0 = time.time()
            results = run(stub, 100, CYCLES)
            took = time.time() - t0
            time.sleep(0.5)
            after = usage(proc.pid)
            left = list(stub.ListVms(vm_pb2.ListVmsRequest()).vms)
        finally:
            proc.kill()
            proc.wait()
    print(f"warm-up {sum(warm)}/{WARMUP}; {sum(results)}/{CYCLES} cycles ok in {took:.1f}s "
          f"from {THREADS} threads ({CYCLES / took:.1f} VMs/s)")
    print(f"daemon before: {before}")
    print(f"daemon after:  {after}")
    failures = []
    if sum(results) != CYCLES or sum(warm) != WARMUP:
        failures.append("a cycle failed")
    if left:
        failures.append(f"{len(left)} VMs left")
    for k in ("fds", "threads", "children"):
        if after[k] > before[k]:
            failures.append(f"{k}: {before[k]} -> {after[k]}")
    # gRPC and malloc keep some memory; a leak per VM would show as MiBs.
    if after["rss_kib"] - before["rss_kib"] > 4096:
        failures.append(f"rss grew {after['rss_kib'] - before['rss_kib']} KiB")
    for f in failures:
        print("FAIL " + f)
    return 1 if failures else 0


sys.exit(main())
