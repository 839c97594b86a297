"""kindling.v1 end to end, from Python (Debian's python3-grpcio, stubs from
protoc + grpc_python_plugin): a real client in another language drives
`kindling serve` over its unix socket.

Checks: health and reflection are served; GetHostInfo; the validation table
(snapshot and restore requests also on hosts without KVM)
(each bad request gets its code and a message naming the field); a guest's
whole life (create -> start -> events -> console replay -> exit status ->
delete); pause/resume stops and restarts the guest's output; a VM process
killed with -9 becomes an event while another VM keeps running; a daemon
killed with -9 and started again finds the running VM and its console.

Usage: lifecycle_test.py KINDLING HELLO_ELF TICKER_ELF PYTHON_STUBS_DIR
                         VIRTIO_HOSTILE_ELF VIRTIO_BALLOON_ELF
"""
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

KINDLING, HELLO, TICKER, STUBS, HOSTILE, BALLOON, POWER_BUTTON = sys.argv[1:8]
sys.path.insert(0, STUBS)

import grpc  # noqa: E402
from kindling.v1 import host_pb2, host_pb2_grpc, vm_pb2, vm_pb2_grpc  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def config(kernel, **kw):
    c = vm_pb2.VmConfig(kernel=kernel, vcpus=1, memory_mib=64,
                        irqchip=vm_pb2.IRQCHIP_FULL, console=vm_pb2.CONSOLE_SERIAL,
                        transport=vm_pb2.TRANSPORT_MMIO, virtqueue=vm_pb2.VIRTQUEUE_SPLIT)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


class Daemon:
    def __init__(self, tmp):
        self.sock = os.path.join(tmp, "kindling.sock")
        self.state = os.path.join(tmp, "state")
        self.log = open(os.path.join(tmp, "serve.log"), "a")
        self.proc = None

    def start(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.metrics_port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen(
            [KINDLING, "serve", "--listen", "unix:" + self.sock, "--state-dir", self.state,
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}"],
            stdout=self.log, stderr=self.log)
        self.channel = grpc.insecure_channel("unix:" + self.sock)
        grpc.channel_ready_future(self.channel).result(timeout=20)
        self.vms = vm_pb2_grpc.VmServiceStub(self.channel)
        self.host = host_pb2_grpc.HostServiceStub(self.channel)

    def kill9(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def expect_error(call, code, text, what):
    try:
        call()
    except grpc.RpcError as e:
        ok = e.code() == code and text in e.details()
        check(ok, f"{what}: {code.name} '{text}' (got {e.code().name} '{e.details()}')")
        return
    check(False, f"{what}: expected {code.name}, the call succeeded")


class Events:
    """Collects WatchEvents in a thread."""

    def __init__(self, stub):
        self.q = queue.Queue()
        self.stream = stub.WatchEvents(vm_pb2.WatchEventsRequest())
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for e in self.stream:
                self.q.put(e)
        except grpc.RpcError:
            pass

    def wait(self, pred, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                e = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            if pred(e):
                return e
        return None

    def close(self):
        self.stream.cancel()


def console(stub, vm_id, seconds=None):
    """Everything AttachConsole sends (until the VM is done, or `seconds`)."""
    def inputs():
        yield vm_pb2.ConsoleInput(vm_id=vm_id)
    stream = stub.AttachConsole(inputs(), timeout=seconds) if seconds else stub.AttachConsole(inputs())
    out = b""
    try:
        for msg in stream:
            out += msg.data
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return out.decode(errors="replace")


def raw_health(channel):
    check_call = channel.unary_unary("/grpc.health.v1.Health/Check",
                                     request_serializer=lambda _: b"",
                                     response_deserializer=lambda b: b)
    return check_call(None, timeout=5)


def raw_reflection(channel):
    call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                 request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
    return b"".join(call(iter([b"\x3a\x00"]), timeout=5))  # list_services: ""


def daemon_guards(d, tmp):
    mode = os.stat(d.sock).st_mode & 0o777
    check(mode == 0o600, f"the socket is mode 0600 ({oct(mode)})")
    second = subprocess.run([KINDLING, "serve", "--listen", "unix:" + d.sock,
                             "--state-dir", os.path.join(tmp, "other")],
                            capture_output=True, text=True, timeout=20)
    check(second.returncode != 0 and "another kindling daemon is listening" in second.stderr,
          f"a second daemon on a live socket is refused ({second.stderr.strip()})")
    tcp = subprocess.run([KINDLING, "serve", "--listen", "tcp:127.0.0.1:0",
                          "--state-dir", os.path.join(tmp, "other")],
                         capture_output=True, text=True, timeout=20)
    check(tcp.returncode != 0 and "mutual TLS" in tcp.stderr,
          f"tcp without TLS is refused ({tcp.stderr.strip()})")
    # A host without a usable /dev/kvm: the daemon serves, says why, refuses VMs.
    nokvm = os.path.join(tmp, "nokvm.sock")
    proc = subprocess.Popen([KINDLING, "serve", "--listen", "unix:" + nokvm, "--state-dir",
                             os.path.join(tmp, "nokvm"), "--kvm-device", "/nonexistent/kvm"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ch = grpc.insecure_channel("unix:" + nokvm)
        grpc.channel_ready_future(ch).result(timeout=20)
        check(raw_health(ch) == b"\x08\x01", "without KVM: health still SERVING")
        info = host_pb2_grpc.HostServiceStub(ch).GetHostInfo(host_pb2.GetHostInfoRequest())
        check(not info.kvm_usable and "/nonexistent/kvm" in info.kvm_error,
              f"without KVM: GetHostInfo says why ({info.kvm_error})")
        expect_error(lambda: vm_pb2_grpc.VmServiceStub(ch).CreateVm(
            vm_pb2.CreateVmRequest(config=config(HELLO))),
            grpc.StatusCode.FAILED_PRECONDITION, "/nonexistent/kvm", "without KVM: CreateVm")
        ch.close()
    finally:
        proc.kill()
        proc.wait()


def make_pki(tmp):
    """A CA, a server certificate for 127.0.0.1, a client certificate it
    signed, and a client certificate from another CA."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=tmp, check=True, capture_output=True)
    for ca in ("ca", "rogue"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca}",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt")
    with open(os.path.join(tmp, "san.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ca in (("server", "ca"), ("client", "ca"), ("intruder", "rogue")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", f"{name}.crt")


def tls(tmp):
    if not shutil.which("openssl"):
        print("SKIP: tls: openssl is not installed")
        return
    make_pki(tmp)
    p = lambda n: os.path.join(tmp, n)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([KINDLING, "serve", "--listen", f"tcp:127.0.0.1:{port}",
                             "--tls-cert", p("server.crt"), "--tls-key", p("server.key"),
                             "--tls-ca", p("ca.crt"), "--state-dir", p("tls-state")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def call(cert):
            creds = grpc.ssl_channel_credentials(
                open(p("ca.crt"), "rb").read(),
                open(p(cert + ".key"), "rb").read() if cert else None,
                open(p(cert + ".crt"), "rb").read() if cert else None)
            ch = grpc.secure_channel(f"127.0.0.1:{port}", creds)
            try:
                return host_pb2_grpc.HostServiceStub(ch).GetHostInfo(
                    host_pb2.GetHostInfoRequest(), timeout=5, wait_for_ready=cert == "client")
            finally:
                ch.close()
        check(call("client").version != "", "tcp + mutual TLS: a client with a CA-signed certificate is served")
        for cert, what in ((None, "no client certificate"), ("intruder", "a certificate from another CA")):
            try:
                call(cert)
                check(False, f"tcp + mutual TLS: {what} must be refused")
            except grpc.RpcError as e:
                check(e.code() == grpc.StatusCode.UNAVAILABLE, f"tcp + mutual TLS: {what} is refused ({e.code().name})")
        cli = subprocess.run([KINDLING, "host", "--socket", f"tcp:127.0.0.1:{port}",
                              "--tls-cert", p("client.crt"), "--tls-key", p("client.key"),
                              "--tls-ca", p("ca.crt")], capture_output=True, text=True, timeout=20)
        check(cli.returncode == 0 and "kvm" in cli.stdout, "the CLI speaks mutual TLS over tcp:")
    finally:
        proc.kill()
        proc.wait()


def validation(d):
    vms = d.vms
    E = grpc.StatusCode
    expect_error(lambda: vms.CreateVm(vm_pb2.CreateVmRequest(config=config(HELLO, memory_mib=0))),
                 E.INVALID_ARGUMENT, "config.memory_mib: 0 is below the minimum of 8", "memory 0")
    expect_error(lambda: vms.CreateVm(vm_pb2.CreateVmRequest(config=config(HELLO, vcpus=0))),
                 E.INVALID_ARGUMENT, "config.vcpus: 0 is below the minimum of 1", "vcpus 0")
    expect_error(lambda: vms.CreateVm(vm_pb2.CreateVmRequest(config=config(HELLO, vcpus=300))),
                 E.INVALID_ARGUMENT, "config.vcpus: 300 is above the maximum of 254", "vcpus 300")
    expect_error(lambda: vms.CreateVm(vm_pb2.CreateVmRequest(
        config=config(HELLO, irqchip=vm_pb2.IRQCHIP_UNSPECIFIED))),
        E.INVALID_ARGUMENT, "config.irqchip: unspecified", "irqchip unspecified")
    expect_error(lambda: vms.CreateVm(vm_pb2.CreateVmRequest(config=config(""))),
                 E.INVALID_ARGUMENT, "config.kernel: required", "no kernel")
    expect_error(lambda: vms.CreateVm(vm_pb2.CreateVmRequest(config=config(HELLO), vm_id="../x")),
                 E.INVALID_ARGUMENT, "vm_id", "vm_id with a slash")
    expect_error(lambda: vms.CreateVm(vm_pb2.CreateVmRequest(
        config=config(HELLO, memory_mib=1 << 19))),
        E.RESOURCE_EXHAUSTED, "more than this host's", "memory above the host's")
    expect_error(lambda: vms.CreateVm(vm_pb2.CreateVmRequest(
        config=config(HELLO, cpu_template="{not json"))),
        E.INVALID_ARGUMENT, "config.cpu_template", "cpu template that is not JSON")
    expect_error(lambda: vms.CreateVm(vm_pb2.CreateVmRequest(config=config("/nonexistent/vmlinux"))),
                 E.NOT_FOUND, "/nonexistent/vmlinux", "missing kernel")
    expect_error(lambda: vms.GetVm(vm_pb2.VmRef(vm_id="nope")), E.NOT_FOUND, "no VM 'nope'",
                 "unknown vm_id")
    vms.CreateVm(vm_pb2.CreateVmRequest(config=config(HELLO), vm_id="dup"))
    expect_error(lambda: vms.CreateVm(vm_pb2.CreateVmRequest(config=config(HELLO), vm_id="dup")),
                 E.ALREADY_EXISTS, "'dup' exists", "duplicate vm_id")
    expect_error(lambda: vms.PauseVm(vm_pb2.VmRef(vm_id="dup")), E.FAILED_PRECONDITION,
                 "'dup' is VM_STATE_CREATED", "pause a created VM")
    vms.DeleteVm(vm_pb2.VmRef(vm_id="dup"))
    check(not os.path.exists(os.path.join(d.state, "vms", "dup")), "delete removes the state")


def state_validation(d):
    """SnapshotVm/RestoreVm/MigrateVm requests refused before anything
    touches KVM."""
    vms = d.vms
    E = grpc.StatusCode
    for bad in ("", "relative/dir", "/" + "x" * 4096):
        expect_error(lambda: vms.SnapshotVm(vm_pb2.SnapshotVmRequest(vm_id="v", directory=bad)),
                     E.INVALID_ARGUMENT, "directory: must be an absolute path",
                     f"snapshot into {bad[:20]!r}")
        expect_error(lambda: vms.RestoreVm(vm_pb2.RestoreVmRequest(directory=bad)),
                     E.INVALID_ARGUMENT, "directory: must be an absolute path",
                     f"restore from {bad[:20]!r}")
    expect_error(lambda: vms.SnapshotVm(vm_pb2.SnapshotVmRequest(vm_id="nope", directory="/tmp/s")),
                 E.NOT_FOUND, "no VM 'nope'", "snapshot of an unknown VM")
    expect_error(lambda: vms.SnapshotVm(vm_pb2.SnapshotVmRequest(vm_id="nope", directory="/tmp/s",
                                                                 diff=True)),
                 E.NOT_FOUND, "no VM 'nope'", "diff snapshot of an unknown VM")
    expect_error(lambda: vms.RestoreVm(vm_pb2.RestoreVmRequest(directory="/tmp/s", mode=77)),
                 E.INVALID_ARGUMENT, "mode: 77 is not a RestoreMode", "restore mode 77")
    expect_error(lambda: vms.RestoreVm(vm_pb2.RestoreVmRequest(directory="/tmp/s",
                                                               vm_id="a/b")),
                 E.INVALID_ARGUMENT, "vm_id", "restore into vm_id with a slash")
    recv = vm_pb2.ReceiveMigrationRequest
    for bad in ("", "tcp:nowhere", "udp:1.2.3.4:5", "unix:" + "x" * 4200):
        expect_error(lambda: vms.ReceiveMigration(recv(listen=bad)),
                     E.INVALID_ARGUMENT, "listen: ", f"receive on {bad[:20]!r}")
    expect_error(lambda: vms.ReceiveMigration(recv(listen="unix:/tmp/r.sock", vm_id="a/b")),
                 E.INVALID_ARGUMENT, "vm_id", "receive into vm_id with a slash")
    mig = vm_pb2.MigrateVmRequest
    expect_error(lambda: vms.MigrateVm(mig(vm_id="v", destination="tcp:nowhere")),
                 E.INVALID_ARGUMENT, "destination: ", "migrate to tcp without a port")
    expect_error(lambda: vms.MigrateVm(mig(vm_id="v", destination="unix:/m", mode=77)),
                 E.INVALID_ARGUMENT, "mode: 77 is not a MigrationMode", "migration mode 77")
    expect_error(lambda: vms.MigrateVm(mig(vm_id="v", destination="unix:/m",
                                           max_downtime_ms=70000)),
                 E.INVALID_ARGUMENT, "max_downtime_ms: 70000", "downtime above the limit")
    expect_error(lambda: vms.MigrateVm(mig(vm_id="v", destination="unix:/m",
                                           postcopy_after_rounds=2)),
                 E.INVALID_ARGUMENT, "postcopy_after_rounds: only for mode MIGRATION_MODE_POSTCOPY",
                 "postcopy_after_rounds with a pre-copy")
    expect_error(lambda: vms.MigrateVm(mig(vm_id="v", destination="unix:/m",
                                           mode=vm_pb2.MIGRATION_MODE_POSTCOPY,
                                           postcopy_after_rounds=31)),
                 E.INVALID_ARGUMENT, "postcopy_after_rounds: 31 is above the maximum of 30",
                 "postcopy_after_rounds above the limit")
    expect_error(lambda: vms.MigrateVm(mig(vm_id="nope", destination="unix:/m")),
                 E.NOT_FOUND, "no VM 'nope'", "migrate an unknown VM")
    upd = vm_pb2.UpdateMigrationRequest
    expect_error(lambda: vms.UpdateMigration(upd(vm_id="v")),
                 E.INVALID_ARGUMENT, "nothing to change", "update a migration with nothing")
    expect_error(lambda: vms.UpdateMigration(upd(vm_id="v", bandwidth_mibps=(1 << 20) + 1)),
                 E.INVALID_ARGUMENT, "bandwidth_mibps: 1048577 is above", "bandwidth above the limit")
    expect_error(lambda: vms.UpdateMigration(upd(vm_id="v", max_downtime_ms=0)),
                 E.INVALID_ARGUMENT, "max_downtime_ms: 0 is outside 1 to 60000", "downtime 0 set")
    expect_error(lambda: vms.UpdateMigration(upd(vm_id="nope", cancel=True)),
                 E.NOT_FOUND, "no VM 'nope'", "cancel an unknown VM's migration")


def without_kvm(d):
    """What a daemon on a host without KVM must still do right."""
    info = d.host.GetHostInfo(host_pb2.GetHostInfoRequest())
    check(not info.kvm_usable and info.kvm_error, f"GetHostInfo: not usable, '{info.kvm_error}'")
    state_validation(d)
    expect_error(lambda: d.vms.RestoreVm(vm_pb2.RestoreVmRequest(directory="/tmp/s")),
                 grpc.StatusCode.FAILED_PRECONDITION, "this host cannot run VMs",
                 "restore on a host without KVM")


def hello_life(d):
    ev = Events(d.vms)
    vm = d.vms.CreateVm(vm_pb2.CreateVmRequest(config=config(HELLO, cmdline="console=ttyS0 api-test",
                                                             rng=True)))
    check(len(vm.vm_id) == 16 and vm.state == vm_pb2.VM_STATE_CREATED and vm.pid > 0,
          f"CreateVm assigns an id and the VM is CREATED with a process ({vm.vm_id}, pid {vm.pid})")
    started = d.vms.StartVm(vm_pb2.VmRef(vm_id=vm.vm_id))
    check(started.state in (vm_pb2.VM_STATE_RUNNING, vm_pb2.VM_STATE_STOPPED), "StartVm runs it")
    exited = ev.wait(lambda e: e.vm_id == vm.vm_id and e.HasField("guest_exited"))
    check(exited is not None and exited.guest_exited.exit_status.code == 0,
          "guest-exit event with status 0")
    got = d.vms.GetVm(vm_pb2.VmRef(vm_id=vm.vm_id))
    check(got.state == vm_pb2.VM_STATE_STOPPED and got.exit_status.code == 0 and
          "debug-exit" in got.exit_status.detail, f"GetVm: STOPPED, exit 0 ({got.exit_status.detail})")
    text = console(d.vms, vm.vm_id)  # attached after the guest ended: all replayed
    check("cmdline: console=ttyS0 api-test" in text and "hello: ok" in text,
          "console attached after the exit replays the whole boot")
    m = d.vms.GetMetrics(vm_pb2.VmRef(vm_id=vm.vm_id))
    check(m.counters.get("exits", 0) > 0, f"metrics of a stopped VM: {m.counters.get('exits')} exits")
    check("virtio.rng0.bytes" in m.counters,
          f"metrics carry the devices' counters ({sorted(k for k in m.counters if '.' in k)})")
    d.vms.DeleteVm(vm_pb2.VmRef(vm_id=vm.vm_id))
    ids = [v.vm_id for v in d.vms.ListVms(vm_pb2.ListVmsRequest()).vms]
    check(vm.vm_id not in ids, "DeleteVm forgets it")
    ev.close()


def power_button(d):
    """ShutdownVm presses the ACPI power button; a guest that acts on it
    powers off through the FADT's sleep control register (S5), and the VM
    stops with status 0. Under both irqchips (the GED's GSI is delivered by
    the userspace IOAPIC or by KVM's)."""
    E = grpc.StatusCode
    for irqchip in (vm_pb2.IRQCHIP_SPLIT, vm_pb2.IRQCHIP_FULL):
        name = vm_pb2.Irqchip.Name(irqchip)
        ev = Events(d.vms)
        vm = d.vms.CreateVm(vm_pb2.CreateVmRequest(config=config(POWER_BUTTON, irqchip=irqchip)))
        ref = vm_pb2.VmRef(vm_id=vm.vm_id)
        expect_error(lambda: d.vms.ShutdownVm(ref), E.FAILED_PRECONDITION, "only a running VM",
                     f"{name}: ShutdownVm of a VM not started yet")
        d.vms.StartVm(ref)
        deadline = time.time() + 30
        while "power_button: waiting" not in console(d.vms, vm.vm_id, 0.3) and time.time() < deadline:
            pass
        d.vms.PauseVm(ref)
        expect_error(lambda: d.vms.ShutdownVm(ref), E.FAILED_PRECONDITION, "only a running VM",
                     f"{name}: ShutdownVm of a paused VM")
        d.vms.ResumeVm(ref)
        d.vms.ShutdownVm(ref)
        exited = ev.wait(lambda e: e.vm_id == vm.vm_id and e.HasField("guest_exited"))
        got = d.vms.GetVm(ref)
        text = console(d.vms, vm.vm_id)
        check(exited is not None and got.state == vm_pb2.VM_STATE_STOPPED and
              got.exit_status.code == 0 and "ACPI S5" in got.exit_status.detail and
              "power_button: pressed" in text,
              f"{name}: ShutdownVm -> the guest saw the button and powered off "
              f"({got.exit_status.code} {got.exit_status.detail!r}; console ends {text[-300:]!r})")
        ev.close()
        d.vms.DeleteVm(ref)


def device_events(d, tmp):
    """WatchEvents carries a device entering needs-reset (a guest feeding
    virtio-blk a looping descriptor chain) and balloon statistics."""
    disk = os.path.join(tmp, "hostile.img")
    with open(disk, "wb") as f:
        f.truncate(4 << 20)
    ev = Events(d.vms)
    cfg = config(HOSTILE, cmdline="console=ttyS0 hostile.cases=loop")
    cfg.disks.add(path=disk, format="raw")
    d.vms.CreateVm(vm_pb2.CreateVmRequest(config=cfg, vm_id="hostile"))
    d.vms.StartVm(vm_pb2.VmRef(vm_id="hostile"))
    e = ev.wait(lambda e: e.vm_id == "hostile" and e.HasField("device_needs_reset"))
    check(e is not None and e.device_needs_reset.device.startswith("virtio-blk") and
          "longer than the queue size" in e.device_needs_reset.reason,
          f"event: the disk needs reset ({e.device_needs_reset.device + ': ' + e.device_needs_reset.reason if e else None})")
    done = ev.wait(lambda e: e.vm_id == "hostile" and e.HasField("guest_exited"))
    check(done is not None and done.guest_exited.exit_status.code == 0, "the hostile guest recovered and exited 0")
    d.vms.DeleteVm(vm_pb2.VmRef(vm_id="hostile"))

    cfg = config(BALLOON, memory_mib=256, cmdline="console=ttyS0 balloon.touch_mib=16 balloon.hold_ms=1500")
    cfg.balloon.amount_mib = 0
    cfg.balloon.stats_interval_s = 1
    d.vms.CreateVm(vm_pb2.CreateVmRequest(config=cfg, vm_id="balloon"))
    d.vms.StartVm(vm_pb2.VmRef(vm_id="balloon"))
    e = ev.wait(lambda e: e.vm_id == "balloon" and e.HasField("balloon_stats"))
    check(e is not None and len(e.balloon_stats.stats) > 0,
          f"event: balloon statistics ({dict(e.balloon_stats.stats) if e else None})")
    ev.wait(lambda e: e.vm_id == "balloon" and e.HasField("guest_exited"))
    d.vms.DeleteVm(vm_pb2.VmRef(vm_id="balloon"))
    ev.close()


def ticks(d, vm_id, seconds):
    return console(d.vms, vm_id, seconds).count("ticker: tick")


def pause_resume_kill(d):
    cfg = config(TICKER, cmdline="console=ttyS0 forever")
    for name in ("t1", "t2"):
        d.vms.CreateVm(vm_pb2.CreateVmRequest(config=cfg, vm_id=name))
        d.vms.StartVm(vm_pb2.VmRef(vm_id=name))
    time.sleep(1.0)
    d.vms.PauseVm(vm_pb2.VmRef(vm_id="t1"))
    a = ticks(d, "t1", 0.5)
    time.sleep(1.0)
    b = ticks(d, "t1", 0.5)
    check(a > 0 and a == b, f"paused: the console stays at {a} ticks (then {b})")
    d.vms.ResumeVm(vm_pb2.VmRef(vm_id="t1"))
    deadline = time.time() + 20
    c = b
    while c <= b and time.time() < deadline:
        c = ticks(d, "t1", 0.5)
    check(c > b, f"resumed: the guest's counter goes on ({b} -> {c} ticks)")

    ev = Events(d.vms)
    pid = d.vms.GetVm(vm_pb2.VmRef(vm_id="t1")).pid
    os.kill(pid, signal.SIGKILL)
    died = ev.wait(lambda e: e.vm_id == "t1" and e.HasField("process_died"))
    check(died is not None and "signal 9" in died.process_died.detail,
          f"kill -9 of a VM process is an event ({died.process_died.detail if died else None})")
    check(d.vms.GetVm(vm_pb2.VmRef(vm_id="t1")).state == vm_pb2.VM_STATE_FAILED, "and it is FAILED")
    n1 = ticks(d, "t2", 0.3)
    time.sleep(1.5)
    n2 = ticks(d, "t2", 0.3)
    check(d.vms.GetVm(vm_pb2.VmRef(vm_id="t2")).state == vm_pb2.VM_STATE_RUNNING and n2 > n1,
          f"the other VM keeps running ({n1} -> {n2} ticks)")
    ev.close()
    d.vms.DeleteVm(vm_pb2.VmRef(vm_id="t1"))


def process_ended(pid):
    """Gone or a zombie: the VM process closes its socket as it exits, and
    DeleteVm returns then; the kernel may need a moment more."""
    for _ in range(100):
        try:
            if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in "ZX":
                return True
        except OSError:
            return True
        time.sleep(0.01)
    return False


def metrics(d):
    """Prometheus text from --metrics-listen, checked by Debian's promtool."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=10).read().decode()
    check('kindling_vm_info{vm_id="t2",state="running"} 1' in text, "metrics: the running VM is listed")
    exits = [l for l in text.splitlines() if l.startswith('kindling_vm_exits_total{vm_id="t2"}')]
    check(exits and int(exits[0].split()[-1]) > 0, f"metrics: its exits ({exits})")
    check('kindling_vm_resident_memory_bytes{vm_id="t2"}' in text and
          'kindling_vm_cpu_seconds_total{vm_id="t2"}' in text, "metrics: its memory and CPU time")
    promtool = shutil.which("promtool")
    if not promtool:
        print("SKIP: promtool (Debian's prometheus) is not installed: metrics not linted")
        if os.environ.get("CI") == "true":
            check(False, "promtool is installed by tools/setup.sh")
        return
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    check(r.returncode == 0, f"promtool check metrics: {(r.stdout + r.stderr).strip() or 'clean'}")
    r404 = None
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/other", timeout=10)
    except urllib.error.HTTPError as e:
        r404 = e.code
    check(r404 == 404, f"metrics: another path is 404 ({r404})")


def daemon_restart(d):
    before = ticks(d, "t2", 0.3)
    pid = d.vms.GetVm(vm_pb2.VmRef(vm_id="t2")).pid
    d.kill9()
    time.sleep(0.5)
    check(os.path.exists(f"/proc/{pid}"), "the VM process outlives a daemon killed with -9")
    d.start()
    vms = {v.vm_id: v for v in d.vms.ListVms(vm_pb2.ListVmsRequest()).vms}
    check("t2" in vms and vms["t2"].state == vm_pb2.VM_STATE_RUNNING,
          f"a restarted daemon lists the running VM ({list(vms)})")
    after = ticks(d, "t2", 0.5)
    check(after >= before > 0, f"its console still attaches and replays ({before} -> {after} ticks)")
    killed = d.vms.KillVm(vm_pb2.VmRef(vm_id="t2"))
    check(killed.state == vm_pb2.VM_STATE_STOPPED and killed.exit_status.code == 137,
          f"KillVm: STOPPED with 137 ({killed.exit_status.code})")
    d.vms.DeleteVm(vm_pb2.VmRef(vm_id="t2"))
    check(process_ended(pid), "DeleteVm ends the VM process")


def main():
    kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
    with tempfile.TemporaryDirectory(prefix="kindling-api-") as tmp:
        d = Daemon(tmp)
        d.start()
        try:
            if not kvm:
                without_kvm(d)
                print("SKIP: no usable /dev/kvm: only the requests refused before KVM ran")
                return 1 if failures else 0
            check(raw_health(d.channel) == b"\x08\x01", "grpc.health.v1 says SERVING")
            check(b"kindling.v1.VmService" in raw_reflection(d.channel), "reflection lists VmService")
            info = d.host.GetHostInfo(host_pb2.GetHostInfoRequest())
            check(info.kvm_usable and info.kvm_api_version == 12 and len(info.supported_cpuid) > 0,
                  f"GetHostInfo: KVM usable, API 12, {len(info.supported_cpuid)} CPUID leaves")
            daemon_guards(d, tmp)
            tls(tmp)
            validation(d)
            state_validation(d)
            hello_life(d)
            power_button(d)
            device_events(d, tmp)
            pause_resume_kill(d)
            metrics(d)
            daemon_restart(d)
        finally:
            d.kill9()
            for line in open(os.path.join(tmp, "serve.log")):
                print("serve.log: " + line.rstrip())
    print(f"{len(failures)} failures")
    return 1 if failures else 0


sys.exit(main())
