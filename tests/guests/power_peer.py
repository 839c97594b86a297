#!/usr/bin/env python3
"""Host-side peer for power_button under QEMU: presses the ACPI power
button over QMP (`-qmp unix:DIR/qmp.sock,server=on,wait=off`) once the
guest says it waits, then checks that the guest powered the machine off.

  power_peer.py DIR SERIAL_LOG

It watches SERIAL_LOG (the harness's copy of the serial output) for
`power_button: waiting`, sends `system_powerdown` once, and expects QEMU's
SHUTDOWN event with reason `guest-shutdown` (the guest wrote S5 to the
sleep control register) within 20 s. Prints `power-peer:` lines; exits 0
on success, 1 otherwise.
"""
import os
import sys
import time

import qmp


def wait_for_line(path, text, deadline):
    while time.time() < deadline:
        try:
            with open(path, "rb") as f:
                if text.encode() in f.read():
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def main():
    d, serial = sys.argv[1], sys.argv[2]
    q = qmp.connect(os.path.join(d, "qmp.sock"), time.time() + 30, "power-peer")
    if not wait_for_line(serial, "power_button: waiting", time.time() + 40):
        print("power-peer: FAIL: the guest never said `power_button: waiting`")
        return 1
    q.ok("system_powerdown")
    print("power-peer: pressed the power button (system_powerdown)")
    ev = q.wait_event("SHUTDOWN", time.time() + 20)
    if ev is None:
        print("power-peer: FAIL: no SHUTDOWN event within 20 s of the press")
        return 1
    reason = ev.get("data", {}).get("reason", "?")
    print("power-peer: SHUTDOWN, reason %s" % reason)
    if reason != "guest-shutdown":
        print("power-peer: FAIL: the shutdown was not the guest's (%s)" % reason)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
