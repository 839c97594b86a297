#include "vm-memory/mapped_region.h"

#include <sys/mman.h>

#include <cerrno>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vm_memory {

absl::StatusOr<MappedRegion> MappedRegion::MapShared(int fd, size_t size,
                                                     int prot) {
  if (size == 0) return absl::InvalidArgumentError("cannot map 0 bytes");
  // SAFETY: a fresh mapping chosen by the kernel; ownership goes to the
  // returned MappedRegion, which unmaps it exactly once.
  void* p = ::mmap(nullptr, size, prot, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) {
    return absl::ErrnoToStatus(errno, absl::StrCat("mmap of ", size,
                                                   " bytes (shared) failed"));
  }
  return MappedRegion(static_cast<uint8_t*>(p), size);
}

absl::StatusOr<MappedRegion> MappedRegion::MapPrivateFile(int fd, uint64_t offset,
                                                          size_t size, int prot) {
  if (size == 0) return absl::InvalidArgumentError("cannot map 0 bytes");
  void* p = ::mmap(nullptr, size, prot, MAP_PRIVATE | MAP_NORESERVE, fd,
                   static_cast<off_t>(offset));
  if (p == MAP_FAILED) {
    return absl::ErrnoToStatus(errno, absl::StrCat("mmap of ", size,
                                                   " bytes (private file) failed"));
  }
  return MappedRegion(static_cast<uint8_t*>(p), size);
}

absl::StatusOr<MappedRegion> MappedRegion::MapAnonymous(size_t size) {
  if (size == 0) return absl::InvalidArgumentError("cannot map 0 bytes");
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("mmap of ", size, " bytes (anonymous) failed"));
  }
  return MappedRegion(static_cast<uint8_t*>(p), size);
}

void MappedRegion::Reset() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace vm_memory
