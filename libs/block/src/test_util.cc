#include "libs/block/src/test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <random>

namespace block_test {

TempDir::TempDir() {
  const char* base = getenv("TEST_TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/blockXXXXXX";
  char* d = mkdtemp(tmpl.data());
  dir_ = d ? d : "/tmp";
}

TempDir::~TempDir() {
  if (dir_ != "/tmp") Run("rm -rf '" + dir_ + "'");
}

CommandResult Run(const std::string& command) {
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return {code, out};
}

bool HaveQemuImg() {
  static const bool have = Run("qemu-img --version").exit_code == 0;
  return have;
}

std::vector<uint8_t> Pattern(size_t len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(len);
  for (size_t i = 0; i < len; i += 8) {
    uint64_t x = rng();
    for (size_t j = 0; j < 8 && i + j < len; ++j) v[i + j] = uint8_t(x >> (8 * j));
  }
  return v;
}

}  // namespace block_test
