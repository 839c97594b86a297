// Runs a libFuzzer entry point without libFuzzer: over each file named on
// the command line, then over deterministic pseudo-random inputs. A crash,
// sanitizer report or CHECK failure fails the test; SIGALRM catches hangs.
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {
constexpr int kRandomInputs = 5000;
constexpr size_t kMaxLen = 4096;
}  // namespace

int main(int argc, char** argv) {
  ::alarm(120);  // a hang becomes a failure, not a stuck CI run
  int files = 0;
  for (int i = 1; i < argc; ++i) {
    std::ifstream in(argv[i], std::ios::binary);
    std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), {});
    LLVMFuzzerTestOneInput(data.data(), data.size());
    ++files;
  }
  std::mt19937_64 rng(0x6b696e646c696e67ULL);
  std::vector<uint8_t> buf;
  for (int i = 0; i < kRandomInputs; ++i) {
    buf.resize(rng() % kMaxLen);
    for (auto& b : buf) b = static_cast<uint8_t>(rng());
    LLVMFuzzerTestOneInput(buf.data(), buf.size());
  }
  std::printf("replayed %d corpus files and %d random inputs\n", files,
              kRandomInputs);
  return 0;
}
