// A guest console for the in-process end-to-end tests: MicroVm's
// console_output feeds Sink(), the test reads what arrived so far.
#ifndef TESTS_E2E_CONSOLE_H_
#define TESTS_E2E_CONSOLE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"

namespace kindling::testing {

class Console {
 public:
  std::function<void(uint8_t)> Sink() {
    return [this](uint8_t b) {
      absl::MutexLock lock(&mu_);
      text_.push_back(static_cast<char>(b));
    };
  }
  std::string Get() {
    absl::MutexLock lock(&mu_);
    return text_;
  }
  // Whether `line` appeared within `limit` (false as soon as FAIL did).
  bool WaitFor(const std::string& line, std::chrono::seconds limit = std::chrono::seconds(120)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string t = Get();
      if (t.find(line) != std::string::npos) return true;
      if (t.find("FAIL") != std::string::npos) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

 private:
  absl::Mutex mu_;
  std::string text_;
};

}  // namespace kindling::testing

#endif  // TESTS_E2E_CONSOLE_H_
