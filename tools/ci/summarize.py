#!/usr/bin/env python3
"""Counts kindling's test results after `bazel test` and prints the summary.

Usage:
  summarize.py [--stage NAME:BAZEL_OUTPUT:TESTLOGS:EXIT_CODE]...
               [--extra RESULTS_FILE]...
  summarize.py BAZEL_OUTPUT TESTLOGS [RESULTS_FILE]     (one unnamed stage)

A stage is one `bazel test` run: its console output, its bazel-testlogs
directory and bazel's exit status. Bazel prints one line per test target
(`//pkg:name  PASSED in 0.3s`). For a Catch2 target the test cases are
counted from its log: Catch2's own summary gives passed/failed, and each
test case with `SKIP: <case>: <why>` lines counts as skipped instead of
passed (a case may print several, one per part it could not run). Any
other target counts as one test: skipped if its log has a `SKIP:` line,
else passed or failed. A target that failed to build or never ran counts as
failed. A stage that reported no target at all, or whose bazel exited with
anything but 0 (all passed) or 3 (some tests failed), counts one failure:
a stage that died before its summary must not read as fewer tests.
Targets of a named stage are reported as `NAME:<target>`.

A RESULTS_FILE holds lines `PASS|FAIL|SKIP name [reason]` from tests run
outside Bazel (the fuzzers). The last line printed is
`N passed, N failed, N skipped`.
"""
import os
import re
import sys

TARGET_LINE = re.compile(
    r"^(//\S+)\s+(?:\(cached\)\s+)?(PASSED|FAILED TO BUILD|FAILED|TIMEOUT|FLAKY|"
    r"NO STATUS|SKIPPED|INCOMPLETE)\b")
CATCH_ALL = re.compile(r"All tests passed \(\d+ assertions? in (\d+) test cases?\)")
CATCH_SOME = re.compile(r"test cases:\s+(\d+)\s+\|\s+(\d+) passed\s+\|\s+(\d+) failed")
# `SKIP: <case>: <why>` (tools/cc/test_skip.h): the case is the text up to
# the first ": " after "SKIP: ".
SKIP_CASE = re.compile(r"^SKIP: (.*?): ")


class Counts:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures, self.skip_lines = [], []

    def add(self, passed, failed, skipped):
        self.passed += passed
        self.failed += failed
        self.skipped += skipped


def log_path(testlogs, target):
    pkg, _, name = target[2:].partition(":")
    return os.path.join(testlogs, pkg, name, "test.log")


def skipped_cases(skips):
    """How many distinct Catch2 test cases the SKIP lines name."""
    return len({m.group(1) if (m := SKIP_CASE.match(l)) else l for l in skips})


def count_target(testlogs, target, status):
    """Returns (passed, failed, skipped, skip_lines) for one target."""
    text = ""
    path = log_path(testlogs, target)
    if os.path.exists(path):
        with open(path, errors="replace") as f:
            text = f.read()
    skips = [l for l in text.splitlines() if l.startswith("SKIP:")]
    if status not in ("PASSED", "FAILED", "FLAKY"):
        return 0, 1, 0, [f"{target}: {status}"]
    m_all = CATCH_ALL.search(text)
    m_some = CATCH_SOME.search(text)
    if m_all and status == "PASSED":
        cases = int(m_all.group(1))
        skipped = min(skipped_cases(skips), cases)
        return cases - skipped, 0, skipped, skips
    if m_some:
        passed, failed = int(m_some.group(2)), int(m_some.group(3))
        if status == "FAILED" and failed == 0:
            failed = 1  # crashed after the summary, or a non-Catch2 failure
        skipped = min(skipped_cases(skips), passed)
        return passed - skipped, failed, skipped, skips
    if status == "FAILED":
        return 0, 1, 0, []
    if skips:
        return 0, 0, 1, skips
    return 1, 0, 0, []


def count_stage(counts, name, bazel_out, testlogs, exit_code):
    prefix = f"{name}:" if name else ""
    seen = set()
    lines = []
    if os.path.exists(bazel_out):
        with open(bazel_out, errors="replace") as f:
            lines = f.readlines()
    for line in lines:
        m = TARGET_LINE.match(line.strip())
        if not m or m.group(1) in seen:
            continue
        seen.add(m.group(1))
        p, fl, s, skips = count_target(testlogs, m.group(1), m.group(2))
        counts.add(p, fl, s)
        counts.skip_lines += [f"{prefix}{m.group(1)}: {l}" for l in skips
                              if l.startswith("SKIP:")]
        if fl:
            counts.failures.append(f"{prefix}{m.group(1)} ({m.group(2)})")
    label = f"stage {name}" if name else "bazel test"
    if not seen:
        counts.add(0, 1, 0)
        counts.failures.append(f"{label}: no test results found in the Bazel output")
    elif exit_code is not None and exit_code not in (0, 3):
        counts.add(0, 1, 0)
        counts.failures.append(f"{label}: bazel exited {exit_code}")


def count_extra(counts, path):
    if not os.path.exists(path):
        return
    with open(path) as f:
        for line in f:
            word, _, rest = line.strip().partition(" ")
            if word == "PASS":
                counts.add(1, 0, 0)
            elif word == "FAIL":
                counts.add(0, 1, 0)
                counts.failures.append(rest)
            elif word == "SKIP":
                counts.add(0, 0, 1)
                counts.skip_lines.append(f"SKIP: {rest}")


def parse_args(argv):
    """Returns ([(name, bazel_out, testlogs, exit_code)], [extra files])."""
    if argv and not argv[0].startswith("--"):
        stages = [("", argv[0], argv[1], None)]
        return stages, argv[2:3]
    stages, extras = [], []
    it = iter(argv)
    for flag in it:
        value = next(it, None)
        if value is None:
            raise SystemExit(f"summarize.py: {flag} needs a value")
        if flag == "--stage":
            parts = value.split(":")
            if len(parts) != 4 or not parts[3].lstrip("-").isdigit():
                raise SystemExit(f"summarize.py: --stage {value}: want NAME:LOG:TESTLOGS:EXIT")
            stages.append((parts[0], parts[1], parts[2], int(parts[3])))
        elif flag == "--extra":
            extras.append(value)
        else:
            raise SystemExit(f"summarize.py: unknown argument {flag}")
    return stages, extras


def main(argv):
    stages, extras = parse_args(argv)
    counts = Counts()
    for stage in stages:
        count_stage(counts, *stage)
    for path in extras:
        count_extra(counts, path)
    for line in counts.skip_lines:
        print(line)
    for fail in counts.failures:
        print(f"FAILED: {fail}")
    print(f"{counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped")
    return 1 if counts.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
