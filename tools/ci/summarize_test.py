#!/usr/bin/env python3
"""Tests for summarize.py: each case writes a Bazel console log and test
logs as `bazel test` leaves them, runs the summary, and checks its counts."""
import contextlib
import io
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import summarize  # noqa: E402

CATCH_OK = "===\nAll tests passed (12 assertions in {n} test cases)\n"
CATCH_FAIL = "===\ntest cases: {n} | {p} passed | {f} failed\nassertions: 9\n"


class Stage:
    """A fake `bazel test` run in a temporary directory."""

    def __init__(self, root, name):
        self.dir = os.path.join(root, name)
        self.testlogs = os.path.join(self.dir, "testlogs")
        self.console = os.path.join(self.dir, "bazel.log")
        os.makedirs(self.testlogs)
        self.lines = []

    def target(self, label, status, log=None):
        self.lines.append(f"{label}    {status} in 0.4s")
        if log is not None:
            pkg, _, name = label[2:].partition(":")
            d = os.path.join(self.testlogs, pkg, name)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "test.log"), "w") as f:
                f.write(log)

    def write(self):
        with open(self.console, "w") as f:
            f.write("INFO: Build completed\n" + "\n".join(self.lines) + "\n")

    def arg(self, name, code):
        self.write()
        return f"{name}:{self.console}:{self.testlogs}:{code}"


def run(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = summarize.main(argv)
    text = out.getvalue()
    return rc, text.splitlines()[-1], text


class SummarizeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def stage(self, name="main"):
        return Stage(self.root, name)

    def test_one_case_with_two_skip_lines_is_one_skip(self):
        s = self.stage()
        s.target("//libs/block:qcow2_test", "PASSED",
                 "SKIP: case a: qemu-img check not run\n"
                 "SKIP: case a: qemu-img compare not run\n" + CATCH_OK.format(n=1))
        rc, last, _ = run(["--stage", s.arg("", 0)])
        self.assertEqual(last, "0 passed, 0 failed, 1 skipped")
        self.assertEqual(rc, 0)

    def test_skips_in_different_cases_each_count(self):
        s = self.stage()
        s.target("//a:t", "PASSED",
                 "SKIP: one: why\nSKIP: two: why\nSKIP: one: again\n" + CATCH_OK.format(n=5))
        _, last, _ = run(["--stage", s.arg("", 0)])
        self.assertEqual(last, "3 passed, 0 failed, 2 skipped")

    def test_script_target_that_only_skipped_is_not_a_pass(self):
        s = self.stage("asan")
        s.target("//tests/e2e:virtio_test", "PASSED", "SKIP: no /dev/kvm\n")
        s.target("//tests/e2e:other_test", "PASSED", "ok\n")
        _, last, text = run(["--stage", s.arg("asan", 0)])
        self.assertEqual(last, "1 passed, 0 failed, 1 skipped")
        self.assertIn("asan://tests/e2e:virtio_test: SKIP: no /dev/kvm", text)

    def test_failed_catch_target_counts_its_cases(self):
        s = self.stage()
        s.target("//a:t", "FAILED", "SKIP: x: why\n" + CATCH_FAIL.format(n=6, p=4, f=2))
        rc, last, _ = run(["--stage", s.arg("", 3)])
        self.assertEqual(last, "3 passed, 2 failed, 1 skipped")
        self.assertEqual(rc, 1)

    def test_target_that_did_not_build_or_run_fails(self):
        s = self.stage()
        s.target("//a:built", "PASSED", "fine\n")
        s.target("//a:broken", "FAILED TO BUILD")
        s.target("//a:never", "NO STATUS")
        _, last, text = run(["--stage", s.arg("", 3)])
        self.assertEqual(last, "1 passed, 2 failed, 0 skipped")
        self.assertIn("FAILED: //a:broken (FAILED TO BUILD)", text)

    def test_stage_without_results_is_a_failure(self):
        s = self.stage("asan")
        rc, last, text = run(["--stage", s.arg("asan", 1)])
        self.assertEqual(last, "0 passed, 1 failed, 0 skipped")
        self.assertIn("stage asan: no test results", text)
        self.assertEqual(rc, 1)

    def test_bazel_error_exit_is_a_failure_even_with_results(self):
        s = self.stage()
        s.target("//a:t", "PASSED", "fine\n")
        _, last, text = run(["--stage", s.arg("opt", 1)])
        self.assertEqual(last, "1 passed, 1 failed, 0 skipped")
        self.assertIn("stage opt: bazel exited 1", text)

    def test_stages_and_extra_results_add_up(self):
        a, b = self.stage("a"), self.stage("b")
        a.target("//x:t", "PASSED", CATCH_OK.format(n=3))
        b.target("//x:t", "PASSED", CATCH_OK.format(n=3))
        extra = os.path.join(self.root, "extra.txt")
        with open(extra, "w") as f:
            f.write("PASS fuzz:queue\nFAIL fuzz:qcow2 (crash)\nSKIP fuzz: no clang\n")
        _, last, text = run(["--stage", a.arg("", 0), "--stage", b.arg("asan", 0),
                             "--extra", extra])
        self.assertEqual(last, "7 passed, 1 failed, 1 skipped")
        self.assertIn("FAILED: fuzz:qcow2 (crash)", text)

    def test_old_positional_form(self):
        s = self.stage()
        s.target("//x:t", "PASSED", "fine\n")
        s.write()
        _, last, _ = run([s.console, s.testlogs])
        self.assertEqual(last, "1 passed, 0 failed, 0 skipped")

    def test_bad_stage_argument_is_refused(self):
        with self.assertRaises(SystemExit):
            summarize.main(["--stage", "only:two"])


if __name__ == "__main__":
    unittest.main()
