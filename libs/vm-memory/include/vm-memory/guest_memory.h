// GuestMemory: the guest's physical RAM, as seen by the VMM.
//
// RAM is a set of non-overlapping regions, each backed by its own memfd and
// mapped MAP_SHARED, so snapshots, live migration and userfaultfd can work
// on the fd. Every access is bounds-checked and may span regions; every
// VMM-side write marks the region's dirty bitmap.
//
//   ASSIGN_OR_RETURN(auto mem, GuestMemory::Create(X86RamLayout(256 << 20)));
//   RETURN_IF_ERROR(mem->WriteObj(GuestAddress(0x7000), boot_params));
//   ASSIGN_OR_RETURN(uint32_t magic, mem->ReadObj<uint32_t>(GuestAddress(0x100)));
//   for (const GuestRegion& r : mem->regions()) RegisterMemslot(r);
//
// Devices that want zero-copy I/O ask for slices (GetSlices), which carry a
// host pointer and a length and never outlive the GuestMemory.
#ifndef VM_MEMORY_GUEST_MEMORY_H_
#define VM_MEMORY_GUEST_MEMORY_H_

#include <sys/uio.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vm-memory/address.h"
#include "vm-memory/dirty_bitmap.h"
#include "vm-memory/mapped_region.h"
#include "vm-memory/unique_fd.h"

namespace vm_memory {

// Where one RAM region sits in the guest physical address space.
struct RegionSpec {
  GuestAddress start;
  uint64_t size = 0;
};

struct MemoryOptions {
  // Back RAM with 2 MiB hugetlbfs pages (region sizes must be 2 MiB
  // multiples and the host must have hugepages reserved).
  bool hugepages = false;
  // Name shown in /proc/<pid>/fd for the memfds.
  std::string name = "kindling-guest-ram";
};

// One contiguous piece of guest RAM: a memfd and its shared mapping.
class GuestRegion {
 public:
  static absl::StatusOr<std::unique_ptr<GuestRegion>> Create(
      const RegionSpec& spec, const MemoryOptions& options);

  GuestAddress start() const { return start_; }
  uint64_t size() const { return mapping_.size(); }
  // One past the last byte; Create guarantees start + size does not wrap.
  GuestAddress end() const { return GuestAddress(start_.value + size()); }
  bool Contains(GuestAddress addr) const {
    return addr >= start_ && addr < end();
  }
  // The memfd behind the region (offset 0 = start()).
  int fd() const { return fd_.get(); }
  HostAddress host_address() const {
    return HostAddress(reinterpret_cast<uint64_t>(mapping_.data()));
  }
  DirtyBitmap& dirty_bitmap() const { return *dirty_; }
  // True when the region is a private copy-on-write mapping of a file
  // (GuestMemory::MapFile): fd() is then that file, which must never be
  // written or punched, and its holes say nothing about the guest's pages.
  bool private_file() const { return private_file_; }
  uint64_t page_size() const { return page_size_; }

 private:
  friend class GuestMemory;
  GuestRegion(GuestAddress start, UniqueFd fd, MappedRegion mapping,
              uint64_t page_size, bool private_file = false);
  uint8_t* HostPointer(RegionOffset offset) const {
    return mapping_.data() + offset.value;
  }

  GuestAddress start_;
  UniqueFd fd_;
  MappedRegion mapping_;
  uint64_t page_size_;
  std::unique_ptr<DirtyBitmap> dirty_;
  bool private_file_;
};

// A host view of guest bytes inside one region, for zero-copy device I/O.
class VolatileSlice {
 public:
  VolatileSlice(uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t size() const { return size_; }
  iovec AsIovec() const { return iovec{data_, size_}; }
  void CopyTo(std::span<uint8_t> dst) const;          // dst.size() <= size()
  void CopyFrom(std::span<const uint8_t> src) const;  // src.size() <= size()

 private:
  uint8_t* data_;
  size_t size_;
};

enum class Access { kRead, kWrite };

class GuestMemory {
 public:
  // Regions must be page-aligned, non-empty, non-overlapping and must not
  // wrap the 64-bit address space.
  static absl::StatusOr<std::unique_ptr<GuestMemory>> Create(
      std::span<const RegionSpec> layout, const MemoryOptions& options = {});
  // RAM that maps `fd` privately, region after region from file offset 0
  // (a snapshot's memory file): pages load on first touch, several VMs
  // mapping one file share its page cache, and guest writes stay private.
  // The file must be at least as long as the regions together.
  static absl::StatusOr<std::unique_ptr<GuestMemory>> MapFile(
      std::span<const RegionSpec> layout, int fd);
  // Another process's RAM, seen from a device process (the virgl
  // renderer, say): region i maps fds[i] shared, so writes reach the
  // guest. Each fd must be at least as long as its region; the regions
  // follow Create's rules. Pages written here are not marked in the
  // owner's dirty bitmaps.
  static absl::StatusOr<std::unique_ptr<GuestMemory>> Adopt(
      std::span<const RegionSpec> layout, std::vector<UniqueFd> fds);

  // Copies guest bytes [addr, addr + dst.size()) into dst.
  absl::Status Read(GuestAddress addr, std::span<uint8_t> dst) const;
  // Copies src into the guest at addr and marks the pages dirty.
  absl::Status Write(GuestAddress addr, std::span<const uint8_t> src);

  // Makes [addr, addr + len) read as zeros and marks it dirty. Whole pages
  // are released back to the host (hole punched in the memfd) instead of
  // being written, so zeroing fresh or large ranges touches no memory.
  absl::Status ZeroRange(GuestAddress addr, uint64_t len);

  template <typename T>
  absl::StatusOr<T> ReadObj(GuestAddress addr) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    absl::Status s = Read(
        addr, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&value), sizeof(T)));
    if (!s.ok()) return s;
    return value;
  }
  template <typename T>
  absl::Status WriteObj(GuestAddress addr, const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(addr, std::span<const uint8_t>(
                           reinterpret_cast<const uint8_t*>(&value), sizeof(T)));
  }

  // One naturally aligned 16-bit load or store, never split into bytes:
  // for fields the guest updates concurrently (virtqueue indices), which a
  // memcpy may read torn. The store marks the page dirty.
  absl::StatusOr<uint16_t> LoadAtomic16(GuestAddress addr) const;
  absl::Status StoreAtomic16(GuestAddress addr, uint16_t value);

  // Host views of [addr, addr + len), one per region crossed. kWrite marks
  // the range dirty up front (the device is about to write it).
  absl::StatusOr<std::vector<VolatileSlice>> GetSlices(GuestAddress addr,
                                                       uint64_t len,
                                                       Access access);
  // True iff every byte of [addr, addr + len) is guest RAM.
  bool CheckRange(GuestAddress addr, uint64_t len) const;

  const GuestRegion* FindRegion(GuestAddress addr) const;
  // Regions in ascending address order, e.g. for KVM memslot registration.
  std::vector<const GuestRegion*> regions() const;
  uint64_t total_size() const;
  // Dirty pages over all regions (for tests and migration statistics).
  uint64_t CountDirtyPages() const;

 private:
  explicit GuestMemory(std::vector<std::unique_ptr<GuestRegion>> regions)
      : regions_(std::move(regions)) {}
  // Visits [addr, addr+len) region by region; fails without visiting
  // anything if any byte is outside RAM.
  template <typename Fn>
  absl::Status ForEachChunk(GuestAddress addr, uint64_t len, Fn&& fn) const;

  std::vector<std::unique_ptr<GuestRegion>> regions_;
};

}  // namespace vm_memory

#endif  // VM_MEMORY_GUEST_MEMORY_H_
