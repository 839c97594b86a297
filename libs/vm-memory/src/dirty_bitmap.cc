#include "vm-memory/dirty_bitmap.h"

#include <bit>

namespace vm_memory {

DirtyBitmap::DirtyBitmap(uint64_t size_bytes, uint64_t page_size)
    : page_size_(page_size),
      num_pages_((size_bytes + page_size - 1) / page_size),
      num_words_((num_pages_ + 63) / 64),
      words_(new std::atomic<uint64_t>[num_words_]) {
  for (size_t i = 0; i < num_words_; ++i) words_[i].store(0);
}

void DirtyBitmap::MarkRange(uint64_t offset, uint64_t len) {
  if (len == 0) return;
  uint64_t first = offset / page_size_;
  if (first >= num_pages_) return;
  uint64_t last_byte = offset + (len - 1);
  if (last_byte < offset) last_byte = UINT64_MAX;  // saturate on overflow
  uint64_t last = last_byte / page_size_;
  if (last >= num_pages_) last = num_pages_ - 1;
  for (uint64_t page = first; page <= last;) {
    size_t word = page / 64;
    uint64_t bit = page % 64;
    uint64_t count = std::min<uint64_t>(64 - bit, last - page + 1);
    uint64_t mask = (count == 64) ? ~0ULL : (((1ULL << count) - 1) << bit);
    words_[word].fetch_or(mask, std::memory_order_relaxed);
    page += count;
  }
}

bool DirtyBitmap::IsDirty(uint64_t offset) const {
  uint64_t page = offset / page_size_;
  if (page >= num_pages_) return false;
  return (words_[page / 64].load(std::memory_order_relaxed) >> (page % 64)) & 1;
}

std::vector<uint64_t> DirtyBitmap::TakeAndClear() {
  std::vector<uint64_t> out(num_words_);
  for (size_t i = 0; i < num_words_; ++i) {
    out[i] = words_[i].exchange(0, std::memory_order_acq_rel);
  }
  return out;
}

uint64_t DirtyBitmap::CountDirtyPages() const {
  uint64_t n = 0;
  for (size_t i = 0; i < num_words_; ++i) {
    n += std::popcount(words_[i].load(std::memory_order_relaxed));
  }
  return n;
}

}  // namespace vm_memory
