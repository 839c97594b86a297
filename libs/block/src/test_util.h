// Test helpers for libs/block: scratch directories, shell commands, qemu-img.
#ifndef KINDLING_BLOCK_TEST_UTIL_H_
#define KINDLING_BLOCK_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

namespace block {
class Image;
}  // namespace block

namespace block_test {

// A fresh directory under $TEST_TMPDIR (or /tmp), removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

struct CommandResult {
  int exit_code;       // -1 if it could not run
  std::string output;  // stdout and stderr
};
CommandResult Run(const std::string& command);

bool HaveQemuImg();

// Deterministic bytes for offset-dependent patterns.
std::vector<uint8_t> Pattern(size_t len, uint64_t seed);

// Replaces the file at `path` with `data`.
void WriteFile(const std::string& path, const std::vector<uint8_t>& data);

// The whole guest-visible content of `img` (a Catch2 REQUIRE checks the read).
std::vector<uint8_t> ReadAll(block::Image& img);

}  // namespace block_test

#endif  // KINDLING_BLOCK_TEST_UTIL_H_
