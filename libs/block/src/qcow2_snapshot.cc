// qcow2 internal snapshots: create, list, apply, delete.
//
// A snapshot is a copy of the L1 table plus one more reference on every L2
// table and data cluster it reaches; the COPIED flags of the active tables
// are cleared so the next write copies the cluster first. Each operation
// orders its writes so that a crash leaves at worst leaked clusters:
// refcount increments and flag changes become durable before the snapshot
// table that relies on them, and decrements happen only after the table (or
// L1) that dropped the references is durable.
#include <time.h>

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"
#include "libs/block/src/endian.h"
#include "libs/block/src/qcow2_image.h"

namespace block::qcow2 {

absl::StatusOr<std::vector<Qcow2SnapshotInfo>> Qcow2::ListSnapshots() {
  return info().snapshots;
}

absl::StatusOr<size_t> Qcow2::FindSnapshot(const std::string& key) const {
  for (size_t i = 0; i < snapshots_.size(); ++i) {
    if (snapshots_[i].id == key) return i;
  }
  for (size_t i = 0; i < snapshots_.size(); ++i) {
    if (snapshots_[i].name == key) return i;
  }
  return absl::NotFoundError(
      absl::StrFormat("%s: no snapshot with id or name '%s'", file_.name(), key));
}

absl::Status Qcow2::TreeRefcounts(const std::vector<uint64_t>& l1, int64_t delta) {
  for (uint64_t e : l1) {
    const uint64_t off = e & kOffsetMask;
    if (off == 0) continue;
    ASSIGN_OR_RETURN(Table * t, LoadTable(l2_cache_, off, true));
    std::vector<uint8_t> l2 = t->data;
    RETURN_IF_ERROR(AddRefcount(off >> cb_, delta));
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      Mapping m = Decode(internal::LoadBe64(&l2[j * 8]));
      if (m.kind == Kind::kCompressed) {
        for (uint64_t c = m.host >> cb_; c <= (m.host + m.csize - 1) >> cb_; ++c) {
          RETURN_IF_ERROR(AddRefcount(c, delta));
        }
      } else if ((m.kind == Kind::kNormal || m.kind == Kind::kZero) && m.host) {
        RETURN_IF_ERROR(AddRefcount(m.host >> cb_, delta));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Qcow2::FixCopiedFlags() {
  for (uint64_t i = 0; i < l1_.size(); ++i) {
    const uint64_t off = l1_[i] & kOffsetMask;
    if (off == 0) continue;
    ASSIGN_OR_RETURN(uint64_t rc, GetRefcount(off >> cb_));
    uint64_t want = rc == 1 ? (l1_[i] | kOflagCopied) : (l1_[i] & ~kOflagCopied);
    if (want != l1_[i]) {
      l1_[i] = want;
      l1_dirty_lo_ = std::min(l1_dirty_lo_, i);
      l1_dirty_hi_ = std::max(l1_dirty_hi_, i + 1);
    }
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      ASSIGN_OR_RETURN(Table * t, LoadTable(l2_cache_, off, true));
      const uint64_t e = L2Get(*t, j);
      Mapping m = Decode(e);
      if (!((m.kind == Kind::kNormal || m.kind == Kind::kZero) && m.host)) continue;
      ASSIGN_OR_RETURN(uint64_t drc, GetRefcount(m.host >> cb_));
      uint64_t w = drc == 1 ? (e | kOflagCopied) : (e & ~kOflagCopied);
      if (w != e) {
        ASSIGN_OR_RETURN(t, LoadTable(l2_cache_, off, true));
        L2Set(*t, j, w);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Qcow2::WriteSnapshotTable(std::vector<Snapshot> snaps) {
  const std::vector<uint8_t> old = SerializeSnapshotTable(snapshots_);
  const uint64_t old_off = h_.snapshots_offset;
  const bool had = h_.nb_snapshots > 0;
  std::vector<uint8_t> bytes = SerializeSnapshotTable(snaps);
  uint64_t off = 0;
  if (!snaps.empty()) {
    const uint64_t n = (bytes.size() + cs_ - 1) / cs_;
    bool fresh;
    ASSIGN_OR_RETURN(off, AllocateClusters(n, &fresh));
    RETURN_IF_ERROR(EnsureFileSize(off + n * cs_));
    bytes.resize(n * cs_, 0);
    RETURN_IF_ERROR(file_.PWrite(bytes.data(), bytes.size(), off));
  }
  RETURN_IF_ERROR(WriteRefcountMeta());
  RETURN_IF_ERROR(file_.DataSync());
  uint8_t hb[12];
  internal::StoreBe32(hb, snaps.size());
  internal::StoreBe64(hb + 4, off);
  RETURN_IF_ERROR(WriteHeaderBytes(kOffNbSnapshots, hb, 12));
  RETURN_IF_ERROR(file_.DataSync());
  h_.nb_snapshots = snaps.size();
  h_.snapshots_offset = off;
  snapshots_ = std::move(snaps);
  if (had) {
    for (uint64_t c = old_off >> cb_; c <= (old_off + old.size() - 1) >> cb_; ++c) {
      RETURN_IF_ERROR(AddRefcount(c, -1));
    }
  }
  return absl::OkStatus();
}

absl::Status Qcow2::CreateSnapshot(const std::string& name) {
  RETURN_IF_ERROR(WritableCheck());
  if (name.empty() || name.size() > 65535) {
    return absl::InvalidArgumentError("snapshot name must be 1..65535 bytes");
  }
  Lock lock(mu_);
  cv_.wait(lock, [&] { return allocating_.empty() && active_io_.empty(); });
  for (const Snapshot& s : snapshots_) {
    if (s.name == name) {
      return absl::AlreadyExistsError(
          absl::StrFormat("%s: snapshot '%s' already exists", file_.name(), name));
    }
  }
  if (snapshots_.size() >= kMaxSnapshots) {
    return absl::ResourceExhaustedError("too many snapshots");
  }
  RETURN_IF_ERROR(FlushLocked(lock));
  RETURN_IF_ERROR(FlushLocked(lock));
  // 1. One more reference on everything the active L1 reaches.
  RETURN_IF_ERROR(TreeRefcounts(l1_, +1));
  // 2. The active tables now share everything: clear their COPIED flags.
  RETURN_IF_ERROR(FixCopiedFlags());
  // 3. The snapshot's own copy of L1.
  Snapshot sn;
  if (!l1_.empty()) {
    const uint64_t n = (l1_.size() * 8 + cs_ - 1) / cs_;
    bool fresh;
    ASSIGN_OR_RETURN(sn.l1_table_offset, AllocateClusters(n, &fresh));
    RETURN_IF_ERROR(EnsureFileSize(sn.l1_table_offset + n * cs_));
    std::vector<uint64_t> be(n * cs_ / 8, 0);
    for (size_t i = 0; i < l1_.size(); ++i) {
      be[i] = __builtin_bswap64(l1_[i] & ~kOflagCopied);
    }
    RETURN_IF_ERROR(file_.PWrite(be.data(), be.size() * 8, sn.l1_table_offset));
  }
  sn.l1_size = l1_.size();
  // 4. Refcounts, flags and the L1 copy durable before the table names it.
  RETURN_IF_ERROR(FlushLocked(lock));
  uint64_t max_id = 0;
  for (const Snapshot& s : snapshots_) {
    uint64_t v;
    if (absl::SimpleAtoi(s.id, &v)) max_id = std::max(max_id, v);
  }
  sn.id = std::to_string(max_id + 1);
  sn.name = name;
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  sn.date_sec = ts.tv_sec;
  sn.date_nsec = ts.tv_nsec;
  sn.disk_size = h_.size;
  sn.extra.assign(24, 0);
  for (int i = 16; i < 24; ++i) sn.extra[i] = 0xff;  // icount: none
  std::vector<Snapshot> snaps = snapshots_;
  snaps.push_back(std::move(sn));
  RETURN_IF_ERROR(WriteSnapshotTable(std::move(snaps)));
  return FlushLocked(lock);
}

absl::Status Qcow2::ApplySnapshot(const std::string& key) {
  RETURN_IF_ERROR(WritableCheck());
  Lock lock(mu_);
  cv_.wait(lock, [&] { return allocating_.empty() && active_io_.empty(); });
  ASSIGN_OR_RETURN(size_t idx, FindSnapshot(key));
  const Snapshot sn = snapshots_[idx];
  if ((sn.disk_size != 0 && sn.disk_size != h_.size) || sn.l1_size > l1_.size()) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: snapshot '%s' has a different disk size; applying it is not "
        "supported",
        file_.name(), key));
  }
  RETURN_IF_ERROR(FlushLocked(lock));
  RETURN_IF_ERROR(FlushLocked(lock));
  ASSIGN_OR_RETURN(std::vector<uint64_t> snap_l1, ReadL1(sn.l1_table_offset, sn.l1_size));
  snap_l1.resize(l1_.size(), 0);
  RETURN_IF_ERROR(TreeRefcounts(snap_l1, +1));
  RETURN_IF_ERROR(WriteRefcountMeta());
  RETURN_IF_ERROR(file_.DataSync());
  std::vector<uint64_t> old = l1_;
  l1_ = snap_l1;
  for (auto& e : l1_) e &= ~kOflagCopied;
  l1_dirty_lo_ = 0;
  l1_dirty_hi_ = l1_.size();
  RETURN_IF_ERROR(WriteL1());
  RETURN_IF_ERROR(file_.DataSync());
  RETURN_IF_ERROR(TreeRefcounts(old, -1));
  RETURN_IF_ERROR(FixCopiedFlags());
  return FlushLocked(lock);
}

absl::Status Qcow2::DeleteSnapshot(const std::string& key) {
  RETURN_IF_ERROR(WritableCheck());
  Lock lock(mu_);
  cv_.wait(lock, [&] { return allocating_.empty() && active_io_.empty(); });
  ASSIGN_OR_RETURN(size_t idx, FindSnapshot(key));
  const Snapshot sn = snapshots_[idx];
  RETURN_IF_ERROR(FlushLocked(lock));
  RETURN_IF_ERROR(FlushLocked(lock));
  ASSIGN_OR_RETURN(std::vector<uint64_t> snap_l1, ReadL1(sn.l1_table_offset, sn.l1_size));
  std::vector<Snapshot> snaps = snapshots_;
  snaps.erase(snaps.begin() + idx);
  RETURN_IF_ERROR(WriteSnapshotTable(std::move(snaps)));
  RETURN_IF_ERROR(TreeRefcounts(snap_l1, -1));
  if (sn.l1_size > 0) {
    const uint64_t n = (uint64_t(sn.l1_size) * 8 + cs_ - 1) / cs_;
    for (uint64_t c = 0; c < n; ++c) {
      RETURN_IF_ERROR(AddRefcount((sn.l1_table_offset >> cb_) + c, -1));
    }
  }
  free_hint_ = 0;
  RETURN_IF_ERROR(FixCopiedFlags());
  return FlushLocked(lock);
}

}  // namespace block::qcow2
