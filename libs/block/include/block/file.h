// A positional file handle for image formats: full-length pread/pwrite that
// name the file and offset in every error, fdatasync, hole punching.
//
// With `direct` (cache=none) the file is opened twice: O_DIRECT for I/O whose
// buffers, offset and length are 4 KiB aligned, and buffered for the rest
// (image metadata, odd sub-cluster writes). Linux keeps the two coherent:
// a direct read or write first writes back and drops cached pages in range.
//
//   ASSIGN_OR_RETURN(block::File f, block::File::Open("disk.img", {}));
//   char buf[512];
//   RETURN_IF_ERROR(f.PRead(buf, sizeof buf, 0));   // zeros past EOF
#ifndef KINDLING_BLOCK_FILE_H_
#define KINDLING_BLOCK_FILE_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace block {

struct FileOptions {
  bool read_only = false;
  bool create = false;     // O_CREAT | O_TRUNC
  bool direct = false;     // O_DIRECT for aligned I/O
};

inline constexpr size_t kDirectAlignment = 4096;

class File {
 public:
  File() = default;
  static absl::StatusOr<File> Open(const std::string& path,
                                   const FileOptions& options);
  // Takes ownership of `fd` (a memfd in fuzzers and tests).
  static File FromFd(int fd, std::string name, bool read_only);

  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  // Reads exactly `len` bytes; the part past end of file reads as zeros.
  absl::Status PRead(void* buf, size_t len, uint64_t offset) const;
  absl::Status PReadV(std::span<const iovec> iov, uint64_t offset) const;
  // Writes exactly `len` bytes (extending the file if needed).
  absl::Status PWrite(const void* buf, size_t len, uint64_t offset) const;
  absl::Status PWriteV(std::span<const iovec> iov, uint64_t offset) const;
  absl::Status DataSync() const;
  // Deallocates the range (reads back zeros); the size does not change.
  absl::Status PunchHole(uint64_t offset, uint64_t len) const;
  // Zeroes the range, cheaply where the filesystem can.
  absl::Status ZeroRange(uint64_t offset, uint64_t len) const;
  absl::Status Truncate(uint64_t size) const;
  absl::StatusOr<uint64_t> Size() const;
  // Bytes the file really occupies on disk (st_blocks * 512).
  absl::StatusOr<uint64_t> AllocatedBytes() const;

  // The descriptor to use for this I/O: O_DIRECT when it is aligned.
  int FdFor(std::span<const iovec> iov, uint64_t offset) const;
  int fd() const { return fd_; }
  int direct_fd() const { return direct_fd_ >= 0 ? direct_fd_ : fd_; }
  bool direct() const { return direct_fd_ >= 0; }
  bool read_only() const { return read_only_; }
  // On tmpfs or ramfs: its I/O never waits for a disk.
  bool memory_backed() const { return memory_backed_; }
  const std::string& name() const { return name_; }

 private:
  int fd_ = -1;
  int direct_fd_ = -1;
  bool read_only_ = false;
  bool memory_backed_ = false;
  std::string name_;
};

}  // namespace block

#endif  // KINDLING_BLOCK_FILE_H_
