"""readme_example: compiles the first ```cpp block of a library's README.

The block becomes a translation unit after `prelude` (extra #include lines
the block leaves out, e.g. the status macros), so the example a reader
copies is the one the build checks: `bazel build //...` (and so CI) fails
when the README drifts from the library's API.
"""

load("@rules_cc//cc:defs.bzl", "cc_library")
load("//tools/cc:copts.bzl", "KINDLING_COPTS")

def readme_example(name, readme, deps, prelude = []):
    src = name + ".cc"
    lines = "\\n".join(['#include "%s"' % h for h in ["kindling/status_macros.h"] + prelude])
    native.genrule(
        name = name + "_src",
        srcs = [readme],
        outs = [src],
        cmd = ("awk '/^```cpp$$/ { f = 1; n++; next } /^```$$/ { f = 0 } f && n == 1' " +
               "$(location %s) > $@.body && " % readme +
               "{ test -s $@.body || { echo 'no ```cpp block in %s' >&2; exit 1; }; } && " % readme +
               "{ printf '// Generated from %s\\n%s\\n'; cat $@.body; } > $@ && rm $@.body" % (readme, lines)),
    )
    cc_library(
        name = name,
        srcs = [src],
        copts = KINDLING_COPTS + ["-Wno-unused-variable", "-Wno-unused-parameter"],
        deps = deps + ["//tools/cc:status_macros", "@system_absl//:lib"],
    )
