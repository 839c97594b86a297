"""static_c_binary: a small static C helper built with gcc called directly.

For programs that run inside a stock-kernel guest's initramfs or inside
tools/nested-kvm (test peers, the guest side of a check). Like the test
guests (tests/guests/guest.bzl) they bypass the C++ toolchain, so
--config=asan, which cannot link -static, leaves them as they are.

    static_c_binary(name = "uds_vsock_peer", src = "uds_vsock_peer.c")

`:<name>` is the program itself (the rule is `<name>_build`).
"""

def static_c_binary(name, src, copts = [], visibility = None):
    native.genrule(
        name = name + "_build",
        srcs = [src],
        outs = [name],
        cmd = "gcc -std=gnu11 -O2 -Wall -Wextra -Werror {copts} -static -o $@ $<".format(
            copts = " ".join(copts),
        ),
        visibility = visibility,
    )
