// DirtyBitmap: one atomic bit per guest page of a region.
//
// Every VMM-side write to guest memory marks the pages it touches, so
// snapshots and live migration can copy only what changed. Marking is
// lock-free (fetch_or) and safe from any thread.
//
//   DirtyBitmap bitmap(region_size, 4096);
//   bitmap.MarkRange(offset, len);
//   std::vector<uint64_t> words = bitmap.TakeAndClear();  // for a pass
#ifndef VM_MEMORY_DIRTY_BITMAP_H_
#define VM_MEMORY_DIRTY_BITMAP_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace vm_memory {

class DirtyBitmap {
 public:
  DirtyBitmap(uint64_t size_bytes, uint64_t page_size);

  // Marks every page overlapping [offset, offset + len). Out-of-range parts
  // are ignored (callers have already bounds-checked the access).
  void MarkRange(uint64_t offset, uint64_t len);
  bool IsDirty(uint64_t offset) const;
  // Returns the bitmap as 64-bit words (bit i of word w = page 64*w + i)
  // and clears it atomically word by word.
  std::vector<uint64_t> TakeAndClear();
  uint64_t CountDirtyPages() const;

  uint64_t page_size() const { return page_size_; }
  uint64_t num_pages() const { return num_pages_; }

 private:
  uint64_t page_size_;
  uint64_t num_pages_;
  size_t num_words_;
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
};

}  // namespace vm_memory

#endif  // VM_MEMORY_DIRTY_BITMAP_H_
