"""Test guests: freestanding PVH ELF files, and their QEMU reference tests.

kindling_guest(name, srcs) builds `<name>.elf` (target `:<name>.elf`, also
reachable as `:<name>`) from the guest's C files plus the runtime in
runtime/, with gcc called directly: the guest is not a host program, so the
host C++ toolchain's flags (PIC, stack protector, libc) must not apply.

virtio_qemu_test(name, guest, expect, devices, transport, ...) is
kindling_guest_qemu_test for the virtio guests: microvm with modern
virtio-mmio or q35 with virtio-pci, an optional raw disk `d0`, the
devices, and the guest's command line.

kindling_guest_qemu_test(name, guest, expect, ...) boots the guest under
qemu-system-x86_64 (TCG) and checks its output against an expect file; see
qemu_test.sh. `harness_args` are extra qemu_test.sh options (--disk-mib,
--disk-sector, --expect-file, --peer), given before the guest; Bazel splits
each string like a shell, so quote texts with spaces. `data`: files they
name (e.g. a --peer script, as `$(location ...)`).
"""

GUEST_CFLAGS = [
    "-std=gnu11",
    "-ffreestanding",
    "-fno-pic",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-O2",
    "-g",
    "-Wall",
    "-Wextra",
    "-Werror",
]

GUEST_LDFLAGS = [
    "-nostdlib",
    "-static",
    "-no-pie",
    "-Wl,--build-id=none",
    "-Wl,--no-warn-rwx-segments",
    "-Wl,-z,max-page-size=4096",
    "-Wl,--fatal-warnings",
]

_RUNTIME_SRCS = "//tests/guests/runtime:sources"
_RUNTIME_HDRS = "//tests/guests/runtime:headers"
_LD = "//tests/guests:guest.ld"

def kindling_guest(name, srcs, visibility = None):
    native.genrule(
        name = name,
        srcs = srcs + [_RUNTIME_SRCS, _RUNTIME_HDRS, _LD],
        outs = [name + ".elf"],
        cmd = " ".join([
            "gcc",
            " ".join(GUEST_CFLAGS + GUEST_LDFLAGS),
            "-I$$(dirname $$(echo $(locations %s) | cut -d' ' -f1))" % _RUNTIME_HDRS,
            "-Wl,-T,$(location %s)" % _LD,
            "$(locations %s)" % _RUNTIME_SRCS,
            " ".join(["$(location %s)" % s for s in srcs]),
            "-o $@",
        ]),
        visibility = visibility,
    )

def kindling_guest_qemu_test(
        name,
        guest,
        expect,
        machine = None,
        memory = None,
        qemu_args = [],
        harness_args = [],
        data = [],
        timeout_s = 60,
        size = "small",
        env = {},
        tags = []):
    args = ["--timeout", str(timeout_s)]
    if machine:
        args += ["--machine", machine]
    if memory:
        args += ["--memory", memory]
    args += harness_args
    args += ["$(location %s)" % guest, "$(location %s)" % expect]
    native.sh_test(
        name = name,
        srcs = ["//tests/guests:qemu_test.sh"],
        data = [guest, expect, "//tests/guests:expect_lib.sh"] + data,
        args = args + (["--"] + qemu_args if qemu_args else []),
        size = size,
        env = env,
        tags = tags,
    )

# microvm with its virtio-mmio transports listed on the command line
# (acpi=off: virtio_mmio.device=...); the guests need nothing else.
VIRTIO_MMIO_MACHINE = "microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on,acpi=off"

def virtio_qemu_test(
        name,
        guest,
        expect,
        devices,
        transport = "mmio",
        disk_mib = None,
        disk_readonly = False,
        append = None,
        qemu_args = [],
        harness_args = [],
        **kwargs):
    """A virtio test guest against QEMU's devices.

    transport "mmio": microvm, modern virtio-mmio (force-legacy=false);
    "pci": q35 (SeaBIOS assigns the BARs; give the -pci devices
    disable-legacy=on). devices: -device values. disk_mib: a raw disk of
    that size as drive d0 (the harness creates it; disk_readonly opens it
    read-only). append: the guest's command line. qemu_args: anything else
    (-netdev, -chardev, -global, -qmp). Other arguments go to
    kindling_guest_qemu_test.
    """
    if transport not in ("mmio", "pci"):
        fail("transport must be mmio or pci")
    args = []
    if transport == "mmio":
        args += ["-global", "virtio-mmio.force-legacy=false"]
    if disk_mib:
        drive = "if=none,id=d0,file=@TMP@/disk.img,format=raw"
        if disk_readonly:
            drive += ",readonly=on"
        args += ["-drive", drive]
        harness_args = ["--disk-mib", str(disk_mib)] + harness_args
    for d in devices:
        args += ["-device", d]
    args += qemu_args
    if append:
        args += ["-append", "'%s'" % append]
    kindling_guest_qemu_test(
        name = name,
        guest = guest,
        expect = expect,
        machine = VIRTIO_MMIO_MACHINE if transport == "mmio" else "q35",
        qemu_args = args,
        harness_args = harness_args,
        **kwargs
    )
