"""A small QMP client for the host-side peers of the QEMU reference runs
(gpu_peer.py, balloon_peer.py, power_peer.py): QEMU started with
`-qmp unix:DIR/qmp.sock,server=on,wait=off`.

    q = qmp.connect(path, deadline, "gpu-peer")   # greeting + qmp_capabilities
    q.cmd("screendump", filename=...)            # the reply ({"return"} or {"error"})
    q.ok("query-balloon")                        # the "return" value; an error ends the peer
    q.wait_event("SHUTDOWN", deadline)           # the event's message, or None

Events that arrive while a command waits for its reply are kept for
wait_event. A closed connection ends the peer with `NAME: FAIL: ...` (plus
the `gone` text, if the caller set one).
"""
import json
import select
import socket
import time


class Qmp:
    def __init__(self, sock, name):
        self.name = name
        self.gone = ""  # said when QEMU goes away: the peer's last finding
        self.events = []
        self._sock = sock
        self._buf = b""

    def _fail(self, why):
        raise SystemExit("%s: FAIL: %s%s" % (self.name, why, self.gone))

    def _read(self, deadline=None):
        """The next message; None if the deadline passes first."""
        while b"\n" not in self._buf:
            left = None if deadline is None else max(0, deadline - time.time())
            if not select.select([self._sock], [], [], left)[0]:
                return None
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._fail("QEMU went away (QMP connection closed)")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **arguments):
        """Sends one command; returns its reply, {"return": ...} or {"error": ...}."""
        req = {"execute": name}
        if arguments:
            req["arguments"] = arguments
        try:
            self._sock.sendall((json.dumps(req) + "\n").encode())
        except OSError:
            self._fail("QEMU went away (QMP connection closed)")
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def ok(self, name, **arguments):
        """The command's "return" value; an error reply ends the peer."""
        r = self.cmd(name, **arguments)
        if "error" in r:
            self._fail("%s: %s" % (name, r["error"]))
        return r["return"]

    def wait_event(self, name, deadline):
        """The first event called NAME (kept or new) before the deadline, or None."""
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name:
                    return self.events.pop(i)
            msg = self._read(deadline)
            if msg is None:
                return None
            self.events.append(msg)


def connect(path, deadline, name):
    """Connects to QEMU's QMP socket (retrying until it exists or the
    deadline passes), reads the greeting and negotiates capabilities."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    while True:
        try:
            s.connect(path)
            break
        except OSError:
            if time.time() > deadline:
                raise SystemExit("%s: FAIL: no QMP socket at %s" % (name, path))
            time.sleep(0.05)
    q = Qmp(s, name)
    q._read()  # greeting
    q.ok("qmp_capabilities")
    return q
