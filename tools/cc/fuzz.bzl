"""kindling_fuzz_target: one libFuzzer entry point, two ways to run it.

Under Bazel (gcc) the target becomes a cc_test `<name>_replay` that feeds the
entry point its seed corpus plus a few thousand deterministic pseudo-random
inputs, so every `bazel test` exercises the parser. The coverage-guided
libFuzzer build (clang, -fsanitize=fuzzer,address,undefined) is made and run
for a short time budget by tools/fuzz/run_fuzzers.sh.
"""

load("@rules_cc//cc:defs.bzl", "cc_library", "cc_test")
load("//tools/cc:copts.bzl", "KINDLING_COPTS")

def kindling_fuzz_target(name, srcs, deps, corpus = []):
    cc_library(
        name = name,
        testonly = True,
        srcs = srcs,
        copts = KINDLING_COPTS,
        deps = deps,
        alwayslink = True,
    )
    cc_test(
        name = name + "_replay",
        srcs = ["//tools/cc:fuzz_replay_main.cc"],
        copts = KINDLING_COPTS,
        args = ["$(location %s)" % c for c in corpus],
        data = corpus,
        deps = [":" + name],
        size = "small",
        # The CI's ASan stage leaves these out: its libFuzzer stage runs the
        # same entry points under ASan+UBSan on the seeds and far more.
        tags = ["fuzz_replay"],
    )
