"""kindling_guest_test: a test guest booted by kindling, checked like QEMU's."""

def kindling_guest_test(name, guest, expect, run_args = [], timeout_s = 60,
                        size = "small", data = []):
    native.sh_test(
        name = name,
        srcs = ["//tests/e2e:kindling_guest_test.sh"],
        args = [
            "$(location //launcher:kindling)",
            "$(location %s)" % guest,
            "$(location %s)" % expect,
            "--timeout",
            str(timeout_s),
            "--",
        ] + run_args,
        data = [
            guest,
            expect,
            "//launcher:kindling",
            "//tests/guests:expect_lib.sh",
        ] + data,
        size = size,
        tags = ["requires-kvm"],
    )
