"""kindling_guest_test: a test guest booted by kindling, checked like QEMU's."""

# What a test needs to run kindling inside tools/nested-kvm where the host
# has no /dev/kvm, and the tags such a test carries: it caches a kernel
# under /var/cache (local) and keeps a core busy with TCG (exclusive).
NESTED_KVM_DATA = [
    "//tools/nested-kvm:init.sh",
    "//tools/nested-kvm:run.sh",
]
NESTED_KVM_TAGS = ["exclusive", "local", "requires-kvm"]

def kindling_guest_test(name, guest, expect, run_args = [], timeout_s = 60,
                        size = "medium", data = [], nested_mem = None,
                        hardware_apic = False):
    """hardware_apic: the test checks LAPIC behaviour that kvm_pvm hosts do
    not have (PV-EOI skips); there it runs under nested KVM instead."""
    env = {"NESTED_MEM": str(nested_mem)} if nested_mem else {}
    if hardware_apic:
        env["KINDLING_TEST_NO_PVM"] = "1"
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
        ] + NESTED_KVM_DATA + data,
        env = env,
        size = size,
        tags = NESTED_KVM_TAGS,
    )
