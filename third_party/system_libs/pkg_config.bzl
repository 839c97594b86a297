"""A repository rule that wraps a system library found by pkg-config.

It runs `pkg-config --cflags --libs` for the given modules at fetch time and
writes a cc_library whose linkopts are the result. Headers live in
/usr/include and need no extra include path.
"""

def _pkg_config_library_impl(ctx):
    args = ["pkg-config", "--libs"] + ctx.attr.modules
    result = ctx.execute(args)
    if result.return_code != 0:
        fail("pkg-config failed for %s: %s" % (ctx.attr.modules, result.stderr))
    linkopts = [f for f in result.stdout.strip().split(" ") if f]
    if ctx.attr.static_prefix:
        # Link these libraries statically (fewer shared objects to load at
        # start-up: kindling's launch-to-first-byte time), in a group so
        # their order does not matter; everything else stays dynamic.
        static = [f for f in linkopts if f.startswith("-l" + ctx.attr.static_prefix)]
        rest = [f for f in linkopts if f not in static]
        linkopts = (["-Wl,-Bstatic", "-Wl,--start-group"] + static +
                    ["-Wl,--end-group", "-Wl,-Bdynamic"] + rest)
    cflags = ctx.execute(["pkg-config", "--cflags"] + ctx.attr.modules)
    copts = [f for f in cflags.stdout.strip().split(" ") if f and not f.startswith("-I/usr/include")]
    ctx.file("BUILD.bazel", """
cc_library(
    name = "lib",
    copts = {copts},
    linkopts = {linkopts},
    visibility = ["//visibility:public"],
)
""".format(copts = repr(copts), linkopts = repr(linkopts)))

pkg_config_library = repository_rule(
    implementation = _pkg_config_library_impl,
    attrs = {
        "modules": attr.string_list(mandatory = True),
        # Libraries whose -l name starts with this are linked statically.
        "static_prefix": attr.string(default = ""),
    },
    local = True,
)
