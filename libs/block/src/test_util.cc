#include "libs/block/src/test_util.h"

#include "block/image.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <fstream>
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

void WriteFile(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data.data()), data.size());
}

std::vector<uint8_t> ReadAll(block::Image& img) {
  std::vector<uint8_t> v(img.size());
  REQUIRE(img.Read(0, v.data(), v.size()).ok());
  return v;
}

}  // namespace block_test
