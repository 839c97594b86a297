// Skipping a Catch2 test case that cannot run on this host.
//
// Catch2 v2 has no SKIP(). A test that needs something the host lacks (no
// /dev/kvm, no hardware virtualisation, no io_uring) calls
// KINDLING_SKIP("why"): it prints `SKIP: <test case>: <why>` and leaves the
// test case. The CI summary (tools/ci/summarize.py) counts such a test case
// as skipped, never as passed.
//
// What tools/setup.sh installs (qemu-img, QEMU, iasl, libvhdi) is different:
// CI must not go quietly weaker when it goes missing. For those,
//
//   KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");  // whole case
//   if (kindling_test::Installed(HaveQemuImg(), "qemu-img", "check")) {...}
//
// print the same SKIP line (the case counts as skipped, also when only a
// part of it could not run) — and under CI=true fail the test case instead.
#ifndef KINDLING_TEST_SKIP_H_
#define KINDLING_TEST_SKIP_H_

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace kindling_test {
inline void PrintSkip(const std::string& why) {
  std::printf("SKIP: %s: %s\n",
              Catch::getResultCapture().getCurrentTestName().c_str(),
              why.c_str());
  std::fflush(stdout);
}

inline bool InCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

// True when `have`. Otherwise `tool` (something tools/setup.sh installs) is
// missing and `part` of the test case cannot run: prints a SKIP line and
// returns false, or under CI=true fails the test case.
inline bool Installed(bool have, const std::string& tool,
                      const std::string& part = "this test case") {
  if (have) return true;
  const std::string why = tool + " is not installed: " + part + " not run";
  if (InCi()) FAIL("CI=true and tools/setup.sh installs " + tool + ": " + why);
  PrintSkip(why);
  return false;
}
}  // namespace kindling_test

#define KINDLING_SKIP(why)              \
  do {                                  \
    ::kindling_test::PrintSkip(why);    \
    return;                             \
  } while (false)

#define KINDLING_SKIP_UNLESS_INSTALLED(have, tool)                \
  do {                                                            \
    if (!::kindling_test::Installed((have), (tool))) return;      \
  } while (false)

#endif  // KINDLING_TEST_SKIP_H_
