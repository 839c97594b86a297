// Skipping a Catch2 test case that cannot run on this host.
//
// Catch2 v2 has no SKIP(). A test that needs something the host lacks (no
// /dev/kvm, no hardware virtualisation, no QEMU) calls KINDLING_SKIP("why"):
// it prints `SKIP: <test case>: <why>` and leaves the test case. The CI
// summary (tools/ci/summarize.py) counts such a test case as skipped, never
// as passed.
#ifndef KINDLING_TEST_SKIP_H_
#define KINDLING_TEST_SKIP_H_

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

namespace kindling_test {
inline void PrintSkip(const std::string& why) {
  std::printf("SKIP: %s: %s\n",
              Catch::getResultCapture().getCurrentTestName().c_str(),
              why.c_str());
  std::fflush(stdout);
}
}  // namespace kindling_test

#define KINDLING_SKIP(why)              \
  do {                                  \
    ::kindling_test::PrintSkip(why);    \
    return;                             \
  } while (false)

#endif  // KINDLING_TEST_SKIP_H_
