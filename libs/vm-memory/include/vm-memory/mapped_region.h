// MappedRegion: owns one mmap()ed range and unmaps it exactly once.
//
//   ASSIGN_OR_RETURN(MappedRegion m,
//                    MappedRegion::MapShared(fd, size, PROT_READ | PROT_WRITE));
//   std::memcpy(m.data(), src, n);   // munmap()ed when m goes out of scope
#ifndef VM_MEMORY_MAPPED_REGION_H_
#define VM_MEMORY_MAPPED_REGION_H_

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"

namespace vm_memory {

class MappedRegion {
 public:
  // Maps `size` bytes of `fd` from offset 0, MAP_SHARED | MAP_NORESERVE.
  static absl::StatusOr<MappedRegion> MapShared(int fd, size_t size, int prot);
  // `size` bytes of `fd` from `offset`, MAP_PRIVATE | MAP_NORESERVE: pages
  // load from the file on first touch and writes stay in this mapping.
  static absl::StatusOr<MappedRegion> MapPrivateFile(int fd, uint64_t offset,
                                                     size_t size, int prot);
  // Private anonymous memory (zero-filled).
  static absl::StatusOr<MappedRegion> MapAnonymous(size_t size);

  MappedRegion() = default;
  MappedRegion(MappedRegion&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  MappedRegion& operator=(MappedRegion&& o) noexcept {
    if (this != &o) {
      Reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;
  ~MappedRegion() { Reset(); }

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedRegion(uint8_t* data, size_t size) : data_(data), size_(size) {}
  void Reset();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace vm_memory

#endif  // VM_MEMORY_MAPPED_REGION_H_
