#!/usr/bin/env python3
"""Host-side peer for virtio_gpu under QEMU: takes screenshots over QMP
(`-qmp unix:DIR/qmp.sock,server=on,wait=off`) until the scanout shows the
guest's test pattern.

  gpu_peer.py DIR --width W --height H

Every 200 ms it asks `screendump` for DIR/shot.ppm (PPM, QEMU's default)
and compares it with the pattern virtio_gpu draws: pixel (x, y) is
R = 4x, G = 4y, B = x ^ y, each mod 256. Prints `gpu-peer:` lines; exits
0 once a screenshot matches, 1 if none does within 40 s.
"""
import os
import sys
import time

import qmp


def read_ppm(path):
    with open(path, "rb") as f:
        data = f.read()
    fields = []
    pos = 0
    while len(fields) < 4:  # magic, width, height, maxval
        while data[pos:pos + 1].isspace():
            pos += 1
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P6" or fields[3] != b"255":
        raise ValueError("not an 8-bit P6 PPM: %r" % fields)
    w, h = int(fields[1]), int(fields[2])
    return w, h, data[pos + 1:pos + 1 + w * h * 3]


def mismatch(w, h, want_w, want_h, rgb):
    """None if the picture is the pattern, else what differs."""
    if (w, h) != (want_w, want_h):
        return "size %dx%d" % (w, h)
    for y in range(h):
        for x in range(w):
            i = (y * w + x) * 3
            want = ((x * 4) & 255, (y * 4) & 255, (x ^ y) & 255)
            if tuple(rgb[i:i + 3]) != want:
                return "pixel %d,%d is %r, want %r" % (x, y, tuple(rgb[i:i + 3]), want)
    return None


def main():
    args = sys.argv[1:]
    d = args.pop(0)
    opts = {"--width": "320", "--height": "240"}
    while args:
        k = args.pop(0)
        opts[k] = args.pop(0)
    want_w, want_h = int(opts["--width"]), int(opts["--height"])
    deadline = time.time() + 40
    q = qmp.connect(os.path.join(d, "qmp.sock"), deadline, "gpu-peer")
    q.gone = "; the last screenshot: none taken"
    shot = os.path.join(d, "shot.ppm")
    last = "none taken"
    while time.time() < deadline:
        r = q.cmd("screendump", filename=shot)
        if "error" not in r:
            w, h, rgb = read_ppm(shot)
            last = mismatch(w, h, want_w, want_h, rgb) or ""
            q.gone = "; the last screenshot: " + (last or "the pattern")
            if not last:
                print("gpu-peer: the screenshot is the pattern, %dx%d" % (want_w, want_h))
                return 0
        else:
            last = r["error"].get("desc", "screendump failed")
        time.sleep(0.2)
    print("gpu-peer: FAIL: no screenshot showed the pattern in 40 s: %s" % last)
    return 1


if __name__ == "__main__":
    sys.exit(main())
