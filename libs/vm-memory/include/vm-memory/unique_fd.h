// UniqueFd: owns one file descriptor and closes it exactly once.
//
//   vm_memory::UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
//   if (!fd.valid()) return absl::ErrnoToStatus(errno, path);
//   ::read(fd.get(), buf, n);   // closed when fd goes out of scope
#ifndef VM_MEMORY_UNIQUE_FD_H_
#define VM_MEMORY_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace vm_memory {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace vm_memory

#endif  // VM_MEMORY_UNIQUE_FD_H_
