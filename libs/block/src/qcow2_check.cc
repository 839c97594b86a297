// qcow2 consistency check and repair: recount every reference, compare with
// the refcounts, check the COPIED flags, fix what the mode allows.
#include <algorithm>
#include <cstdint>
#include <set>

#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"
#include "libs/block/src/endian.h"
#include "libs/block/src/qcow2_image.h"

namespace block::qcow2 {

absl::StatusOr<CheckResult> Qcow2::Check(RepairMode mode) {
  if (mode != RepairMode::kNone && !writable_) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s: repair needs the image open read-write", file_.name()));
  }
  Lock lock(mu_);
  cv_.wait(lock, [&] { return allocating_.empty() && active_io_.empty(); });
  if (writable_) RETURN_IF_ERROR(FlushLocked(lock));
  CheckResult r;
  ASSIGN_OR_RETURN(uint64_t fsize, file_.Size());
  const uint64_t nclusters = std::max((fsize + cs_ - 1) >> cb_, end_cluster_);
  if (nclusters > (1ULL << 32)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: %u clusters are too many to check", file_.name(), nclusters));
  }
  std::vector<uint32_t> expected(nclusters, 0);
  auto note = [&](std::string msg) {
    if (r.messages.size() < 1000) r.messages.push_back(std::move(msg));
  };
  // Counts a reference; false (a corruption) when it lies past the file.
  auto ref = [&](uint64_t off, uint64_t len, const char* what) {
    if (len == 0) return true;
    uint64_t first = off >> cb_, last = (off + len - 1) >> cb_;
    if (last >= nclusters || off + len < off) {
      note(absl::StrFormat("ERROR %s at 0x%x is past the end of the file", what, off));
      ++r.corruptions;
      return false;
    }
    for (uint64_t c = first; c <= last; ++c) {
      if (expected[c] < UINT32_MAX) ++expected[c];
    }
    return true;
  };
  bool changed = false;
  const bool fix = mode == RepairMode::kAll;
  // -r all: an active L1 entry whose L2 table lies past the file is
  // dropped (that range then reads as unallocated), an active L2 entry
  // whose data does reads as zeros (v3 zero flag; v2: unallocated), as
  // QEMU repairs them.
  auto drop_l1 = [&](uint64_t i) {
    l1_[i] = 0;
    l1_dirty_lo_ = std::min(l1_dirty_lo_, i);
    l1_dirty_hi_ = std::max(l1_dirty_hi_, i + 1);
    ++r.corruptions_fixed;
    changed = true;
  };
  auto zero_l2 = [&](uint64_t table, uint64_t j) {
    auto t = LoadTable(l2_cache_, table, true);
    if (!t.ok()) return;
    L2Set(**t, j, h_.version >= 3 ? kOflagZero : 0);
    ++r.corruptions_fixed;
    changed = true;
  };
  ref(0, cs_, "header");
  ref(h_.refcount_table_offset, uint64_t(h_.refcount_table_clusters) * cs_,
      "refcount table");
  for (uint64_t i = 0; i < reftable_.size(); ++i) {
    uint64_t off = reftable_[i] & ~511ULL;
    if (off == 0) continue;
    if (off % cs_ != 0) {
      note(absl::StrFormat("ERROR refcount block %u at 0x%x is not cluster aligned", i, off));
      ++r.corruptions;
      continue;
    }
    ref(off, cs_, "refcount block");
  }
  if (h_.nb_snapshots) {
    ref(h_.snapshots_offset, SerializeSnapshotTable(snapshots_).size(),
        "snapshot table");
  }
  std::vector<uint8_t> l2buf(cs_);
  auto walk = [&](const std::vector<uint64_t>& l1, uint64_t l1_off,
                  bool active) -> absl::Status {
    ref(l1_off, l1.size() * 8, "L1 table");
    std::set<uint64_t> seen;  // one L1 naming a table twice is corrupt
    for (uint64_t i = 0; i < l1.size(); ++i) {
      uint64_t off = l1[i] & kOffsetMask;
      if (off == 0) continue;
      if (!seen.insert(off).second) {
        note(absl::StrFormat("ERROR L1 entry %u: L2 table 0x%x is already used by this L1 table", i, off));
        ++r.corruptions;
        ref(off, cs_, "L2 table");
        continue;
      }
      if (off % cs_ != 0) {
        note(absl::StrFormat("ERROR L1 entry %u: L2 table at 0x%x is not cluster aligned", i, off));
        ++r.corruptions;
        continue;
      }
      if (!ref(off, cs_, "L2 table")) {
        if (active && fix) drop_l1(i);
        continue;
      }
      // Read through the cache so unflushed tables count (none after flush).
      if (Table* t = l2_cache_.Find(off)) {
        l2buf = t->data;
      } else {
        RETURN_IF_ERROR(file_.PRead(l2buf.data(), cs_, off));
      }
      for (uint64_t j = 0; j < l2_entries_; ++j) {
        uint64_t e = internal::LoadBe64(&l2buf[j * 8]);
        Mapping m = Decode(e);
        switch (m.kind) {
          case Kind::kCompressed:
            if (!ref(m.host & ~511ULL, m.csize + (m.host & 511), "compressed cluster")) {
              if (active && fix) zero_l2(off, j);
              break;
            }
            if (active) {
              ++r.allocated_clusters;
              ++r.compressed_clusters;
            }
            break;
          case Kind::kNormal:
          case Kind::kZero:
            if (m.host == 0) break;
            if (m.host % cs_ != 0) {
              note(absl::StrFormat(
                  "ERROR L2 entry %u of table 0x%x: cluster 0x%x is not aligned",
                  j, off, m.host));
              ++r.corruptions;
              break;
            }
            if (!ref(m.host, cs_, "data cluster")) {
              if (active && fix) zero_l2(off, j);
              break;
            }
            if (active && m.kind == Kind::kNormal) ++r.allocated_clusters;
            break;
          case Kind::kUnallocated:
            break;
        }
      }
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(walk(l1_, h_.l1_table_offset, true));
  for (const Snapshot& s : snapshots_) {
    ASSIGN_OR_RETURN(auto l1, ReadL1(s.l1_table_offset, s.l1_size));
    RETURN_IF_ERROR(walk(l1, s.l1_table_offset, false));
  }
  r.total_clusters = (h_.size + cs_ - 1) >> cb_;

  // Compare.
  for (uint64_t c = 0; c < nclusters; ++c) {
    auto rc_or = GetRefcount(c);
    if (!rc_or.ok()) {
      note(std::string(rc_or.status().message()));
      ++r.check_errors;
      continue;
    }
    const uint64_t rc = *rc_or, want = expected[c];
    if (want > rc_max_) {
      note(absl::StrFormat("ERROR cluster %u: %u references overflow the %u-bit refcount",
                           c, want, 1u << h_.refcount_order));
      ++r.corruptions;
      continue;
    }
    if (rc == want) continue;
    if (rc < want) {
      note(absl::StrFormat("ERROR cluster %u refcount=%u reference=%u", c, rc, want));
      ++r.corruptions;
      if (mode == RepairMode::kAll && SetRefcount(c, want).ok()) {
        ++r.corruptions_fixed;
        changed = true;
      }
    } else {
      note(absl::StrFormat("Leaked cluster %u refcount=%u reference=%u", c, rc, want));
      ++r.leaks;
      if (mode != RepairMode::kNone && SetRefcount(c, want).ok()) {
        ++r.leaks_fixed;
        changed = true;
      }
      if (want == 0) free_hint_ = std::min(free_hint_, c);
    }
  }
  // COPIED flags of the active tables: set exactly when the refcount is 1.
  for (uint64_t i = 0; i < l1_.size(); ++i) {
    uint64_t off = l1_[i] & kOffsetMask;
    if (off == 0 || off % cs_ != 0 || (off >> cb_) >= nclusters) continue;
    auto rc_or = GetRefcount(off >> cb_);
    if (!rc_or.ok()) {
      ++r.check_errors;
      continue;
    }
    const uint64_t rc = *rc_or;
    if ((rc == 1) != bool(l1_[i] & kOflagCopied)) {
      note(absl::StrFormat("ERROR OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%x refcount=%u",
                           i, l1_[i], rc));
      ++r.corruptions;
      if (mode == RepairMode::kAll) {
        l1_[i] = rc == 1 ? (l1_[i] | kOflagCopied) : (l1_[i] & ~kOflagCopied);
        l1_dirty_lo_ = std::min(l1_dirty_lo_, i);
        l1_dirty_hi_ = std::max(l1_dirty_hi_, i + 1);
        ++r.corruptions_fixed;
        changed = true;
      }
    }
    auto t_or = LoadTable(l2_cache_, off, true);
    if (!t_or.ok()) continue;
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      Table* t = l2_cache_.Find(off);
      if (t == nullptr) break;
      uint64_t e = L2Get(*t, j);
      Mapping m = Decode(e);
      if (m.kind != Kind::kNormal && !(m.kind == Kind::kZero && m.host)) continue;
      if (m.host % cs_ != 0 || (m.host >> cb_) >= nclusters) continue;
      auto drc_or = GetRefcount(m.host >> cb_);
      if (!drc_or.ok()) {
        ++r.check_errors;
        continue;
      }
      const uint64_t drc = *drc_or;
      t = l2_cache_.Find(off);
      if (t == nullptr) break;
      if ((drc == 1) != m.copied) {
        note(absl::StrFormat("ERROR OFLAG_COPIED data cluster: l2_entry=%x refcount=%u", e, drc));
        ++r.corruptions;
        if (mode == RepairMode::kAll) {
          L2Set(*t, j, drc == 1 ? (e | kOflagCopied) : (e & ~kOflagCopied));
          ++r.corruptions_fixed;
          changed = true;
        }
      }
    }
  }
  uint64_t last = 0;
  for (uint64_t c = 0; c < nclusters; ++c) {
    if (expected[c]) last = c + 1;
  }
  r.image_end_offset = last << cb_;
  if (changed) RETURN_IF_ERROR(FlushLocked(lock));
  // Everything repaired: the image is consistent again, as QEMU's check
  // leaves it (the corrupt mark goes, writes are allowed again).
  if (fix && (h_.incompatible_features & kIncompatCorrupt) && r.check_errors == 0 &&
      r.corruptions == r.corruptions_fixed) {
    h_.incompatible_features &= ~kIncompatCorrupt;
    RETURN_IF_ERROR(WriteIncompatibleFeatures());
    corrupt_ = false;
    note("Repaired: the image is no longer marked corrupt");
  }
  return r;
}

}  // namespace block::qcow2
