"""kindling_guest_test: a test guest booted by kindling, checked like QEMU's."""

def kindling_guest_test(name, guest, expect, run_args = [], timeout_s = 60,
                        size = "medium", data = [], nested_mem = None):
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
            "//tools/nested-kvm:run.sh",
            "//tools/nested-kvm:init.sh",
        ] + data,
        env = {"NESTED_MEM": str(nested_mem)} if nested_mem else {},
        size = size,
        # Without /dev/kvm the test boots a QEMU/TCG guest (tools/nested-kvm):
        # it caches a kernel under /var/cache and keeps a core busy.
        tags = ["requires-kvm", "local", "exclusive"],
    )
