#!/usr/bin/env python3
"""Counts kindling's test results after `bazel test` and prints the summary.

Usage: summarize.py BAZEL_OUTPUT_FILE TESTLOGS_DIR [EXTRA_RESULTS_FILE]

Bazel prints one line per test target (`//pkg:name  PASSED in 0.3s`). For a
Catch2 target the test cases are counted from its log: Catch2's own summary
gives passed/failed, and each `SKIP: <case>: <why>` line moves one passed
case to skipped. Any other target counts as one test: skipped if its log has
a `SKIP:` line, else passed or failed. A target that failed to build or
never ran counts as failed. EXTRA_RESULTS_FILE holds lines
`PASS|FAIL|SKIP name [reason]` from tests run outside Bazel (the fuzzers).
The last line printed is `N passed, N failed, N skipped`.
"""
import os
import re
import sys

TARGET_LINE = re.compile(
    r"^(//\S+)\s+(?:\(cached\)\s+)?(PASSED|FAILED|TIMEOUT|FLAKY|NO STATUS|"
    r"FAILED TO BUILD|SKIPPED|INCOMPLETE)\b")
CATCH_ALL = re.compile(r"All tests passed \(\d+ assertions? in (\d+) test cases?\)")
CATCH_SOME = re.compile(r"test cases:\s+(\d+)\s+\|\s+(\d+) passed\s+\|\s+(\d+) failed")


def log_path(testlogs, target):
    pkg, _, name = target[2:].partition(":")
    return os.path.join(testlogs, pkg, name, "test.log")


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
        return cases - len(skips), 0, len(skips), skips
    if m_some:
        passed, failed = int(m_some.group(2)), int(m_some.group(3))
        if status == "FAILED" and failed == 0:
            failed = 1  # crashed after the summary, or a non-Catch2 failure
        return max(passed - len(skips), 0), failed, len(skips), skips
    if status == "FAILED":
        return 0, 1, 0, []
    if skips:
        return 0, 0, 1, skips
    return 1, 0, 0, []


def main():
    bazel_out, testlogs = sys.argv[1], sys.argv[2]
    extra = sys.argv[3] if len(sys.argv) > 3 else None
    passed = failed = skipped = 0
    failures, skip_lines = [], []
    seen = set()
    with open(bazel_out, errors="replace") as f:
        for line in f:
            m = TARGET_LINE.match(line.strip())
            if not m or m.group(1) in seen:
                continue
            seen.add(m.group(1))
            p, fl, s, lines = count_target(testlogs, m.group(1), m.group(2))
            passed, failed, skipped = passed + p, failed + fl, skipped + s
            skip_lines += [f"{m.group(1)}: {l}" for l in lines if l.startswith("SKIP:")]
            if fl:
                failures.append(f"{m.group(1)} ({m.group(2)})")
    if extra and os.path.exists(extra):
        with open(extra) as f:
            for line in f:
                word, _, rest = line.strip().partition(" ")
                if word == "PASS":
                    passed += 1
                elif word == "FAIL":
                    failed += 1
                    failures.append(rest)
                elif word == "SKIP":
                    skipped += 1
                    skip_lines.append(f"SKIP: {rest}")
    if not seen:
        print("no test results found in the Bazel output")
        failed += 1
    for line in skip_lines:
        print(line)
    for fail in failures:
        print(f"FAILED: {fail}")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
