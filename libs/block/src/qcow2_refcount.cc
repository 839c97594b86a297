// qcow2 refcounts: reading and updating refcount blocks of 1..64 bits,
// cluster allocation, refcount table growth, deferred frees.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"
#include "libs/block/src/endian.h"
#include "libs/block/src/qcow2_image.h"

namespace block::qcow2 {

using internal::LoadBe16;
using internal::LoadBe32;
using internal::LoadBe64;
using internal::StoreBe16;
using internal::StoreBe32;
using internal::StoreBe64;

uint64_t Qcow2::RbGet(const uint8_t* b, uint64_t i) const {
  switch (h_.refcount_order) {
    case 3: return b[i];
    case 4: return LoadBe16(b + 2 * i);
    case 5: return LoadBe32(b + 4 * i);
    case 6: return LoadBe64(b + 8 * i);
    default: {  // 1, 2 or 4 bits, low bits first
      const uint32_t bits = 1u << h_.refcount_order;
      const uint32_t per = 8 / bits;
      return (b[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1);
    }
  }
}

void Qcow2::RbSet(uint8_t* b, uint64_t i, uint64_t v) const {
  switch (h_.refcount_order) {
    case 3: b[i] = v; return;
    case 4: StoreBe16(b + 2 * i, v); return;
    case 5: StoreBe32(b + 4 * i, v); return;
    case 6: StoreBe64(b + 8 * i, v); return;
    default: {
      const uint32_t bits = 1u << h_.refcount_order;
      const uint32_t per = 8 / bits;
      const uint32_t shift = (i % per) * bits;
      const uint8_t mask = ((1u << bits) - 1) << shift;
      b[i / per] = (b[i / per] & ~mask) | ((v << shift) & mask);
    }
  }
}

absl::StatusOr<Table*> Qcow2::GetRefblock(uint64_t rbi, bool create) {
  if (rbi >= reftable_.size()) {
    if (!create) return nullptr;
    RETURN_IF_ERROR(GrowReftable(rbi + 1));
  }
  const uint64_t off = reftable_[rbi] & ~511ULL;
  if (off != 0) return LoadTable(rb_cache_, off, false);
  if (!create) return nullptr;
  ASSIGN_OR_RETURN(uint64_t n, AllocateAtEnd(1));
  RETURN_IF_ERROR(EnsureFileSize(n + cs_));
  RETURN_IF_ERROR(MakeRoom(rb_cache_, false));
  Table* t = rb_cache_.Insert(n, std::vector<uint8_t>(cs_, 0), true);
  reftable_[rbi] = n;
  rt_dirty_lo_ = std::min(rt_dirty_lo_, rbi);
  rt_dirty_hi_ = std::max(rt_dirty_hi_, rbi + 1);
  const uint64_t self = n >> cb_;
  if (self / rb_entries_ == rbi) {
    RbSet(t->data.data(), self % rb_entries_, 1);
  } else {
    RETURN_IF_ERROR(AddRefcount(self, 1));
  }
  return LoadTable(rb_cache_, n, false);
}

absl::StatusOr<uint64_t> Qcow2::GetRefcount(uint64_t cluster) {
  ASSIGN_OR_RETURN(Table * t, GetRefblock(cluster / rb_entries_, false));
  if (t == nullptr) return 0;
  return RbGet(t->data.data(), cluster % rb_entries_);
}

absl::Status Qcow2::SetRefcount(uint64_t cluster, uint64_t value) {
  if (value > rc_max_) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: refcount overflow: cluster %u would need refcount %u (max %u)",
        file_.name(), cluster, value, rc_max_));
  }
  ASSIGN_OR_RETURN(Table * t, GetRefblock(cluster / rb_entries_, value != 0));
  if (t == nullptr) return absl::OkStatus();  // 0 where no block: already 0
  RbSet(t->data.data(), cluster % rb_entries_, value);
  t->dirty = true;
  return absl::OkStatus();
}

absl::Status Qcow2::AddRefcount(uint64_t cluster, int64_t delta) {
  ASSIGN_OR_RETURN(Table * t, GetRefblock(cluster / rb_entries_, delta > 0));
  uint64_t v = t ? RbGet(t->data.data(), cluster % rb_entries_) : 0;
  if (delta < 0 && v < uint64_t(-delta)) {
    return MarkCorrupt(absl::StrFormat(
        "refcount underflow: cluster %u (host offset 0x%x) has refcount %u",
        cluster, cluster << cb_, v));
  }
  if (delta > 0 && rc_max_ - v < uint64_t(delta)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: refcount overflow at cluster %u (host offset 0x%x): %u + %d "
        "exceeds %u",
        file_.name(), cluster, cluster << cb_, v, delta, rc_max_));
  }
  RbSet(t->data.data(), cluster % rb_entries_, v + delta);
  t->dirty = true;
  return absl::OkStatus();
}

absl::Status Qcow2::EnsureFileSize(uint64_t end) {
  if (end <= file_size_) return absl::OkStatus();
  const uint64_t chunk = std::max<uint64_t>(cs_, 1 << 20);
  uint64_t target = (end + chunk - 1) / chunk * chunk;
  RETURN_IF_ERROR(file_.Truncate(target));
  file_size_ = target;
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Qcow2::AllocateAtEnd(uint64_t n) {
  const uint64_t start = end_cluster_;
  if ((start + n) << cb_ > (kOffsetMask | 511)) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s: image file would exceed 64 PiB", file_.name()));
  }
  end_cluster_ += n;
  zero_from_ = std::max(zero_from_, end_cluster_ << cb_);
  return start << cb_;
}

absl::StatusOr<uint64_t> Qcow2::AllocateClusters(uint64_t n, bool* fresh) {
  uint64_t start = free_hint_;
  for (uint64_t j = 0; j < n;) {
    const uint64_t c = start + j;
    if (c >= end_cluster_) break;  // everything past the end is free
    ASSIGN_OR_RETURN(uint64_t rc, GetRefcount(c));
    if (rc != 0) {
      start = c + 1;
      j = 0;
    } else {
      ++j;
    }
  }
  *fresh = (start << cb_) >= zero_from_;
  if (start + n > end_cluster_) {
    if ((start + n) << cb_ > (kOffsetMask | 511)) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: image file would exceed 64 PiB", file_.name()));
    }
    end_cluster_ = start + n;
  }
  zero_from_ = std::max(zero_from_, (start + n) << cb_);
  if (n == 1 || start == free_hint_) free_hint_ = start + n;
  for (uint64_t j = 0; j < n; ++j) RETURN_IF_ERROR(AddRefcount(start + j, 1));
  return start << cb_;
}

absl::Status Qcow2::GrowReftable(uint64_t min_entries) {
  const uint64_t per_cluster = cs_ / 8;
  uint64_t entries = std::max<uint64_t>(min_entries, reftable_.size() * 2);
  entries = (entries + per_cluster - 1) / per_cluster * per_cluster;
  uint64_t clusters, extra;
  std::vector<uint64_t> need;  // refcount block indices to create
  for (;;) {
    clusters = entries / per_cluster;
    if (clusters * cs_ > kMaxReftableBytes) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s: refcount table would exceed %u bytes", file_.name(),
          kMaxReftableBytes));
    }
    const uint64_t start = end_cluster_;
    extra = 0;
    for (;;) {  // blocks that cover the new table and themselves
      need.clear();
      const uint64_t last = start + clusters + extra - 1;
      for (uint64_t r = start / rb_entries_; r <= last / rb_entries_; ++r) {
        if (r >= reftable_.size() || (reftable_[r] & ~511ULL) == 0) need.push_back(r);
      }
      if (need.size() == extra) break;
      extra = need.size();
    }
    if (need.empty() || need.back() < entries) break;
    entries *= 2;
  }
  ASSIGN_OR_RETURN(uint64_t table_off, AllocateAtEnd(clusters + extra));
  RETURN_IF_ERROR(EnsureFileSize(table_off + (clusters + extra) * cs_));
  const uint64_t old_off = h_.refcount_table_offset;
  const uint64_t old_clusters = h_.refcount_table_clusters;
  reftable_.resize(entries, 0);
  for (uint64_t k = 0; k < need.size(); ++k) {
    const uint64_t off = table_off + (clusters + k) * cs_;
    RETURN_IF_ERROR(MakeRoom(rb_cache_, false));
    rb_cache_.Insert(off, std::vector<uint8_t>(cs_, 0), true);
    reftable_[need[k]] = off;
  }
  for (uint64_t c = 0; c < clusters + extra; ++c) {
    RETURN_IF_ERROR(AddRefcount((table_off >> cb_) + c, 1));
  }
  // Blocks first, then the table, then the header that switches to it.
  for (auto& [off, t] : rb_cache_.entries()) {
    if (t.dirty) RETURN_IF_ERROR(WriteTable(off, t));
  }
  RETURN_IF_ERROR(file_.DataSync());
  std::vector<uint64_t> be(reftable_);
  for (auto& e : be) e = __builtin_bswap64(e);
  RETURN_IF_ERROR(file_.PWrite(be.data(), be.size() * 8, table_off));
  RETURN_IF_ERROR(file_.DataSync());
  uint8_t hb[12];
  StoreBe64(hb, table_off);
  StoreBe32(hb + 8, clusters);
  RETURN_IF_ERROR(WriteHeaderBytes(kOffReftableOffset, hb, 12));
  RETURN_IF_ERROR(file_.DataSync());
  h_.refcount_table_offset = table_off;
  h_.refcount_table_clusters = clusters;
  rt_dirty_lo_ = ~0ULL;
  rt_dirty_hi_ = 0;
  pending_free_.push_back({old_off >> cb_, old_clusters});
  return absl::OkStatus();
}

absl::Status Qcow2::WriteRefcountMeta() {
  for (auto& [off, t] : rb_cache_.entries()) {
    if (t.dirty) RETURN_IF_ERROR(WriteTable(off, t));
  }
  if (rt_dirty_lo_ < rt_dirty_hi_) {
    // New refcount blocks must be on disk before the table points at them.
    RETURN_IF_ERROR(file_.DataSync());
    std::vector<uint64_t> be(reftable_.begin() + rt_dirty_lo_,
                             reftable_.begin() + rt_dirty_hi_);
    for (auto& e : be) e = __builtin_bswap64(e);
    RETURN_IF_ERROR(file_.PWrite(be.data(), be.size() * 8,
                                 h_.refcount_table_offset + rt_dirty_lo_ * 8));
    rt_dirty_lo_ = ~0ULL;
    rt_dirty_hi_ = 0;
  }
  return absl::OkStatus();
}

absl::Status Qcow2::ApplyFrees(std::vector<std::pair<uint64_t, uint64_t>> frees,
                               Lock& lock) {
  // Unlocked I/O that began before now may still use a freed cluster.
  const uint64_t seq = io_seq_;
  cv_.wait(lock, [&] { return active_io_.empty() || *active_io_.begin() > seq; });
  for (const auto& [first, count] : frees) {
    for (uint64_t c = first; c < first + count; ++c) {
      RETURN_IF_ERROR(AddRefcount(c, -1));
      ASSIGN_OR_RETURN(uint64_t rc, GetRefcount(c));
      if (rc == 0) free_hint_ = std::min(free_hint_, c);
    }
  }
  return absl::OkStatus();
}

}  // namespace block::qcow2
