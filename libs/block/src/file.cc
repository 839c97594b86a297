#include "block/file.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <utility>
#include <vector>

#include "absl/strings/str_format.h"

namespace block {
namespace {

absl::Status Errno(int err, const std::string& what, const std::string& name,
                   uint64_t offset, uint64_t len) {
  return absl::Status(
      absl::ErrnoToStatusCode(err),
      absl::StrFormat("%s(%s, offset 0x%x, length %u): %s", what, name, offset,
                      len, strerror(err)));
}

bool Aligned(uint64_t v) { return v % kDirectAlignment == 0; }

uint64_t Total(std::span<const iovec> iov) {
  uint64_t n = 0;
  for (const iovec& v : iov) n += v.iov_len;
  return n;
}

// After a partial transfer of `n` bytes, moves `first` past the iovecs that
// are done and trims the one that was cut.
void SkipDone(std::vector<iovec>& rest, size_t& first, size_t n) {
  while (first < rest.size() && n >= rest[first].iov_len) {
    n -= rest[first].iov_len;
    ++first;
  }
  if (n) {
    rest[first].iov_base = static_cast<char*>(rest[first].iov_base) + n;
    rest[first].iov_len -= n;
  }
}

}  // namespace

absl::StatusOr<File> File::Open(const std::string& path,
                                const FileOptions& options) {
  int flags = O_CLOEXEC | (options.read_only ? O_RDONLY : O_RDWR);
  if (options.create) flags |= O_CREAT | O_TRUNC;
  int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) {
    int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrFormat("open(%s): %s", path, strerror(err)));
  }
  File f = FromFd(fd, path, options.read_only);
  if (options.direct) {
    int dfd = ::open(path.c_str(), (flags & ~(O_CREAT | O_TRUNC)) | O_DIRECT);
    if (dfd < 0) {
      int err = errno;
      return absl::Status(
          absl::ErrnoToStatusCode(err),
          absl::StrFormat("open(%s, O_DIRECT): %s", path, strerror(err)));
    }
    f.direct_fd_ = dfd;
  }
  return f;
}

File File::FromFd(int fd, std::string name, bool read_only) {
  File f;
  f.fd_ = fd;
  f.read_only_ = read_only;
  f.name_ = std::move(name);
  struct statfs fs;
  f.memory_backed_ = ::fstatfs(fd, &fs) == 0 &&
                     (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
  return f;
}

File::File(File&& other) noexcept { *this = std::move(other); }

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    if (direct_fd_ >= 0) ::close(direct_fd_);
    fd_ = std::exchange(other.fd_, -1);
    direct_fd_ = std::exchange(other.direct_fd_, -1);
    read_only_ = other.read_only_;
    memory_backed_ = other.memory_backed_;
    name_ = std::move(other.name_);
  }
  return *this;
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
  if (direct_fd_ >= 0) ::close(direct_fd_);
}

int File::FdFor(std::span<const iovec> iov, uint64_t offset) const {
  if (direct_fd_ < 0 || !Aligned(offset)) return fd_;
  for (const iovec& v : iov) {
    if (!Aligned(reinterpret_cast<uintptr_t>(v.iov_base)) ||
        !Aligned(v.iov_len)) {
      return fd_;
    }
  }
  return direct_fd_;
}

absl::Status File::PRead(void* buf, size_t len, uint64_t offset) const {
  iovec v{buf, len};
  return PReadV({&v, 1}, offset);
}

absl::Status File::PWrite(const void* buf, size_t len, uint64_t offset) const {
  iovec v{const_cast<void*>(buf), len};
  return PWriteV({&v, 1}, offset);
}

absl::Status File::PReadV(std::span<const iovec> iov, uint64_t offset) const {
  const uint64_t total = Total(iov);
  int fd = FdFor(iov, offset);
  std::vector<iovec> rest(iov.begin(), iov.end());
  size_t first = 0;
  uint64_t done = 0;
  while (done < total) {
    ssize_t n = ::preadv(fd, rest.data() + first,
                         static_cast<int>(std::min<size_t>(rest.size() - first, IOV_MAX)),
                         static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "pread", name_, offset + done, total - done);
    }
    if (n == 0) {  // end of file: the rest reads as zeros
      for (size_t i = first; i < rest.size(); ++i) {
        memset(rest[i].iov_base, 0, rest[i].iov_len);
      }
      return absl::OkStatus();
    }
    done += n;
    SkipDone(rest, first, n);
    // A short direct read leaves unaligned state: finish buffered.
    fd = fd_;
  }
  return absl::OkStatus();
}

absl::Status File::PWriteV(std::span<const iovec> iov, uint64_t offset) const {
  if (read_only_) {
    return absl::PermissionDeniedError(
        absl::StrFormat("write to read-only file %s at offset 0x%x", name_,
                        offset));
  }
  const uint64_t total = Total(iov);
  int fd = FdFor(iov, offset);
  std::vector<iovec> rest(iov.begin(), iov.end());
  size_t first = 0;
  uint64_t done = 0;
  while (done < total) {
    ssize_t n = ::pwritev(fd, rest.data() + first,
                          static_cast<int>(std::min<size_t>(rest.size() - first, IOV_MAX)),
                          static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "pwrite", name_, offset + done, total - done);
    }
    if (n == 0) return Errno(EIO, "pwrite", name_, offset + done, total - done);
    done += n;
    SkipDone(rest, first, n);
    fd = fd_;
  }
  return absl::OkStatus();
}

absl::Status File::DataSync() const {
  if (read_only_) return absl::OkStatus();
  if (::fdatasync(fd_) != 0) return Errno(errno, "fdatasync", name_, 0, 0);
  return absl::OkStatus();
}

absl::Status File::PunchHole(uint64_t offset, uint64_t len) const {
  if (len == 0) return absl::OkStatus();
  if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(offset), static_cast<off_t>(len)) != 0) {
    return Errno(errno, "fallocate(PUNCH_HOLE)", name_, offset, len);
  }
  return absl::OkStatus();
}

absl::Status File::ZeroRange(uint64_t offset, uint64_t len) const {
  if (len == 0) return absl::OkStatus();
  if (::fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(offset), static_cast<off_t>(len)) == 0) {
    return absl::OkStatus();
  }
  if (errno != EOPNOTSUPP && errno != ENOSYS) {
    return Errno(errno, "fallocate(ZERO_RANGE)", name_, offset, len);
  }
  if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(offset), static_cast<off_t>(len)) == 0) {
    return absl::OkStatus();
  }
  // Last resort: write zeros.
  std::vector<char> zeros(std::min<uint64_t>(len, 1 << 20), 0);
  for (uint64_t done = 0; done < len;) {
    size_t n = std::min<uint64_t>(zeros.size(), len - done);
    if (auto s = PWrite(zeros.data(), n, offset + done); !s.ok()) return s;
    done += n;
  }
  return absl::OkStatus();
}

absl::Status File::Truncate(uint64_t size) const {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
    return Errno(errno, "ftruncate", name_, size, 0);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> File::Size() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Errno(errno, "fstat", name_, 0, 0);
  return static_cast<uint64_t>(st.st_size);
}

absl::StatusOr<uint64_t> File::AllocatedBytes() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Errno(errno, "fstat", name_, 0, 0);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace block
