#!/usr/bin/env python3
"""Host-side peer for virtio_balloon under QEMU: drives the balloon target
over QMP (`-qmp unix:DIR/qmp.sock,server=on,wait=off`).

  balloon_peer.py DIR --ram-mib N --targets T1,T2,... [--device ID]

For each target T (4 KiB pages) it sends `balloon` with value = RAM - T
pages (QEMU then sets num_pages = T and raises a config interrupt) and
polls `query-balloon` until the guest's `actual` reports T pages (10 s
each). With --device it finally reads the guest's statistics
(`qom-get /machine/peripheral/ID guest-stats`) and checks that
stat-total-memory is between 1/2 and 1x the RAM. Prints `balloon-peer:`
lines; exits 0 on success, 1 otherwise.
"""
import os
import sys
import time

import qmp


def main():
    args = sys.argv[1:]
    d = args.pop(0)
    opts = {"--ram-mib": "256", "--targets": "2048", "--device": ""}
    while args:
        k = args.pop(0)
        opts[k] = args.pop(0)
    ram = int(opts["--ram-mib"]) << 20
    targets = [int(t) for t in opts["--targets"].split(",")]
    q = qmp.connect(os.path.join(d, "qmp.sock"), time.time() + 30, "balloon-peer")
    for t in targets:
        want = ram - t * 4096
        q.ok("balloon", value=want)
        print("balloon-peer: target %d pages" % t)
        end = time.time() + 10
        while True:
            actual = q.ok("query-balloon")["actual"]
            if actual == want:
                break
            if time.time() > end:
                print("balloon-peer: FAIL: the guest's balloon stays at %d pages, "
                      "want %d" % ((ram - actual) // 4096, t))
                return 1
            time.sleep(0.05)
        print("balloon-peer: guest reached %d pages" % t)
    if opts["--device"]:
        st = q.ok("qom-get", path="/machine/peripheral/" + opts["--device"],
                  property="guest-stats")
        total = st["stats"].get("stat-total-memory", -1)
        print("balloon-peer: guest says total memory %d MiB" % (total >> 20))
        if not ram // 2 <= total <= ram:
            print("balloon-peer: FAIL: stat-total-memory %d for %d bytes of RAM" % (total, ram))
            return 1
    print("balloon-peer: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
