// QED. Facts from QEMU's docs/interop/qed_spec.txt; code is ours.
#include "block/qed.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"

namespace block {
namespace {

constexpr uint32_t kMagic = 0x00444551;  // "QED\0" little-endian
constexpr uint64_t kFBacking = 1, kFNeedCheck = 2, kFNoProbe = 4;
constexpr uint64_t kKnownFeatures = kFBacking | kFNeedCheck | kFNoProbe;
constexpr uint64_t kZeroCluster = 1;

uint32_t Le32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
uint64_t Le64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}
void PutLe32(uint8_t* p, uint32_t v) { memcpy(p, &v, 4); }
void PutLe64(uint8_t* p, uint64_t v) { memcpy(p, &v, 8); }

}  // namespace

absl::Status QedImage::Create(const std::string& path, const QedCreateOptions& o) {
  const uint64_t cs = o.cluster_size;
  if (cs < 4096 || cs > (64u << 20) || (cs & (cs - 1))) {
    return absl::InvalidArgumentError("QED cluster size must be a power of two, 4 KiB..64 MiB");
  }
  if (o.table_size < 1 || o.table_size > 16 || (o.table_size & (o.table_size - 1))) {
    return absl::InvalidArgumentError("QED table size must be 1, 2, 4, 8 or 16 clusters");
  }
  const uint64_t entries = o.table_size * cs / 8;
  const double max = double(entries) * entries * cs;
  if (o.size % 512 || double(o.size) > max) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "QED size %u must be a multiple of 512 and at most %.0f", o.size, max));
  }
  if (o.backing_file.size() > cs - 64) {
    return absl::InvalidArgumentError("backing file name too long");
  }
  std::vector<uint8_t> h(cs, 0);
  PutLe32(&h[0], kMagic);
  PutLe32(&h[4], cs);
  PutLe32(&h[8], o.table_size);
  PutLe32(&h[12], 1);
  uint64_t features = 0;
  if (!o.backing_file.empty()) {
    features |= kFBacking;
    if (o.backing_format == "raw") features |= kFNoProbe;
    PutLe32(&h[56], 64);
    PutLe32(&h[60], o.backing_file.size());
    memcpy(&h[64], o.backing_file.data(), o.backing_file.size());
  }
  PutLe64(&h[16], features);
  PutLe64(&h[40], cs);  // L1 right after the header
  PutLe64(&h[48], o.size);
  ASSIGN_OR_RETURN(File f, File::Open(path, {.create = true}));
  RETURN_IF_ERROR(f.Truncate(cs + o.table_size * cs));
  RETURN_IF_ERROR(f.PWrite(h.data(), h.size(), 0));
  return f.DataSync();
}

absl::StatusOr<std::unique_ptr<QedImage>> QedImage::OpenInChain(
    const std::string& path, const OpenOptions& o, std::vector<std::string>* chain) {
  ASSIGN_OR_RETURN(File f, File::Open(path, {.read_only = o.read_only, .direct = o.direct}));
  std::unique_ptr<QedImage> q(new QedImage(std::move(f)));
  RETURN_IF_ERROR(q->Load(o, chain));
  return q;
}

absl::StatusOr<std::unique_ptr<QedImage>> QedImage::OpenFile(File file, const OpenOptions& o) {
  std::unique_ptr<QedImage> q(new QedImage(std::move(file)));
  RETURN_IF_ERROR(q->Load(o, nullptr));
  return q;
}

QedImage::~QedImage() {
  if (!file_.read_only()) (void)Flush();
}

absl::Status QedImage::Load(const OpenOptions& o, std::vector<std::string>* chain) {
  const std::string& name = file_.name();
  auto bad = [&](const char* field, int off, const std::string& why) {
    return absl::DataLossError(
        absl::StrFormat("%s: QED header field %s (offset %d): %s", name, field, off, why));
  };
  ASSIGN_OR_RETURN(uint64_t fsize, file_.Size());
  uint8_t h[64];
  if (fsize < sizeof h) {
    return absl::DataLossError(absl::StrFormat("%s: truncated QED header (%u bytes)", name, fsize));
  }
  RETURN_IF_ERROR(file_.PRead(h, sizeof h, 0));
  if (Le32(h) != kMagic) return bad("magic", 0, "not a QED image");
  cs_ = Le32(h + 4);
  const uint32_t table_size = Le32(h + 8);
  const uint32_t header_size = Le32(h + 12);
  features_ = Le64(h + 16);
  l1_offset_ = Le64(h + 40);
  size_ = Le64(h + 48);
  if (cs_ < 4096 || cs_ > (64u << 20) || (cs_ & (cs_ - 1))) {
    return bad("cluster_size", 4, absl::StrFormat("%u is not a power of two in 4 KiB..64 MiB", cs_));
  }
  if (table_size < 1 || table_size > 16 || (table_size & (table_size - 1))) {
    return bad("table_size", 8, absl::StrFormat("%u is not 1, 2, 4, 8 or 16", table_size));
  }
  if (header_size < 1 || header_size > 16) {
    return bad("header_size", 12, absl::StrFormat("%u clusters is outside 1..16", header_size));
  }
  if (features_ & ~kKnownFeatures) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: QED header field features (offset 16): unknown bits 0x%x", name,
        features_ & ~kKnownFeatures));
  }
  table_bytes_ = uint64_t(table_size) * cs_;
  header_clusters_ = header_size;
  entries_ = table_bytes_ / 8;
  const double max = double(entries_) * entries_ * cs_;
  if (size_ % 512 || double(size_) > max) {
    return bad("image_size", 48, absl::StrFormat("%u is unaligned or above %.0f", size_, max));
  }
  if (l1_offset_ % cs_ || l1_offset_ == 0 || l1_offset_ > fsize ||
      table_bytes_ > fsize - l1_offset_) {
    return bad("l1_table_offset", 40,
               absl::StrFormat("0x%x is unaligned or the table runs past the end of the file", l1_offset_));
  }
  l1_.resize(entries_);
  RETURN_IF_ERROR(file_.PRead(l1_.data(), table_bytes_, l1_offset_));
  file_end_ = (fsize + cs_ - 1) / cs_ * cs_;
  if (features_ & kFBacking) {
    const uint32_t boff = Le32(h + 56), blen = Le32(h + 60);
    if (blen == 0 || blen > 1023 || boff < 64 || boff > uint64_t(header_size) * cs_ ||
        blen > uint64_t(header_size) * cs_ - boff) {
      return bad("backing_filename_offset", 56,
                 absl::StrFormat("name [%u, +%u) is not inside the header", boff, blen));
    }
    std::string bname(blen, '\0');
    RETURN_IF_ERROR(file_.PRead(bname.data(), blen, boff));
    if (chain != nullptr) {
      std::string path = bname;
      if (path[0] != '/') {
        size_t slash = name.rfind('/');
        if (slash != std::string::npos) path = name.substr(0, slash + 1) + path;
      }
      OpenOptions bo = o;
      bo.read_only = true;
      bo.format = (features_ & kFNoProbe) ? "raw" : "";
      auto b = OpenImageInChain(path, bo, *chain);
      if (!b.ok()) {
        return absl::Status(b.status().code(), absl::StrFormat("%s: backing file: %s", name,
                                                               b.status().message()));
      }
      backing_ = std::move(*b);
    }
  }
  if (!file_.read_only() && (features_ & kFNeedCheck)) {
    RETURN_IF_ERROR(Check(true).status());
    RETURN_IF_ERROR(SetNeedCheck(false));
  }
  return absl::OkStatus();
}

Capabilities QedImage::capabilities() const {
  return {.read_only = file_.read_only(), .discard = true, .write_zeroes = true,
          .backing = backing_ != nullptr};
}

absl::Status QedImage::SetNeedCheck(bool on) {
  uint64_t f = on ? (features_ | kFNeedCheck) : (features_ & ~kFNeedCheck);
  if (f == features_) return absl::OkStatus();
  uint8_t b[8];
  PutLe64(b, f);
  if (on) {
    RETURN_IF_ERROR(file_.PWrite(b, 8, 16));
    RETURN_IF_ERROR(file_.DataSync());
  } else {
    RETURN_IF_ERROR(file_.DataSync());
    RETURN_IF_ERROR(file_.PWrite(b, 8, 16));
  }
  features_ = f;
  return absl::OkStatus();
}

absl::Status QedImage::WriteTable(uint64_t off, const std::vector<uint64_t>& t) {
  return file_.PWrite(t.data(), table_bytes_, off);
}

absl::StatusOr<std::vector<uint64_t>*> QedImage::GetL2(uint64_t l1i, bool create) {
  uint64_t off = l1_[l1i];
  if (off == 0) {
    if (!create) return nullptr;
    off = file_end_;
    file_end_ += table_bytes_;
    std::vector<uint64_t> t(entries_, 0);
    RETURN_IF_ERROR(WriteTable(off, t));
    uint8_t b[8];
    PutLe64(b, off);
    RETURN_IF_ERROR(file_.PWrite(b, 8, l1_offset_ + l1i * 8));
    l1_[l1i] = off;
  }
  auto it = l2_.find(off);
  if (it != l2_.end()) return &it->second;
  if (off % cs_ || off + table_bytes_ > file_end_) {
    return absl::DataLossError(absl::StrFormat(
        "%s: QED L1 entry %u (file offset 0x%x) points to an L2 table at 0x%x outside the file",
        file_.name(), l1i, l1_offset_ + l1i * 8, off));
  }
  if (l2_.size() >= 64) l2_.clear();
  std::vector<uint64_t> t(entries_);
  RETURN_IF_ERROR(file_.PRead(t.data(), table_bytes_, off));
  return &(l2_[off] = std::move(t));
}

absl::StatusOr<uint64_t> QedImage::Lookup(uint64_t cluster) {
  ASSIGN_OR_RETURN(auto* t, GetL2(cluster / entries_, false));
  if (t == nullptr) return 0;
  uint64_t e = (*t)[cluster % entries_];
  if (e > kZeroCluster && (e % cs_ || e >= file_end_)) {
    return absl::DataLossError(absl::StrFormat(
        "%s: QED L2 entry for cluster %u points to 0x%x, outside the file", file_.name(),
        cluster, e));
  }
  return e;
}

absl::Status QedImage::SetEntry(uint64_t cluster, uint64_t value) {
  ASSIGN_OR_RETURN(auto* t, GetL2(cluster / entries_, true));
  (*t)[cluster % entries_] = value;
  uint8_t b[8];
  PutLe64(b, value);
  return file_.PWrite(b, 8, l1_[cluster / entries_] + (cluster % entries_) * 8);
}

absl::Status QedImage::ReadBacking(uint64_t offset, std::span<const iovec> out) {
  return block::ReadBacking(backing_.get(), backing_ ? backing_->size() : 0, offset, out);
}

absl::Status QedImage::ReadV(uint64_t offset, std::span<const iovec> iov) {
  const uint64_t len = IovLength(iov);
  RETURN_IF_ERROR(CheckRange(offset, len));
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t g = offset + pos, c = g / cs_, in = g % cs_;
    const uint64_t n = std::min(cs_ - in, len - pos);
    uint64_t e;
    {
      std::lock_guard<std::mutex> l(mu_);
      ASSIGN_OR_RETURN(e, Lookup(c));
    }
    auto slice = IovSlice(iov, pos, n);
    if (e == 0) {
      RETURN_IF_ERROR(ReadBacking(g, slice));
    } else if (e == kZeroCluster) {
      IovZero(slice);
    } else {
      RETURN_IF_ERROR(file_.PReadV(slice, e + in));
    }
    pos += n;
  }
  return absl::OkStatus();
}

absl::Status QedImage::WriteV(uint64_t offset, std::span<const iovec> iov) {
  const uint64_t len = IovLength(iov);
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (file_.read_only()) return absl::PermissionDeniedError(file_.name() + " is read-only");
  std::lock_guard<std::mutex> l(mu_);
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t g = offset + pos, c = g / cs_, in = g % cs_;
    const uint64_t n = std::min(cs_ - in, len - pos);
    ASSIGN_OR_RETURN(uint64_t e, Lookup(c));
    auto slice = IovSlice(iov, pos, n);
    if (e > kZeroCluster) {
      RETURN_IF_ERROR(file_.PWriteV(slice, e + in));
    } else {
      // New cluster at the end: old content (backing or zeros) around the
      // new data, then the table entry.
      RETURN_IF_ERROR(SetNeedCheck(true));
      const uint64_t at = file_end_;
      file_end_ += cs_;
      std::vector<uint8_t> buf(cs_, 0);
      if (e == 0 && backing_) {
        iovec v{buf.data(), cs_};
        RETURN_IF_ERROR(ReadBacking(c * cs_, {&v, 1}));
      }
      IovCopyOut(slice, 0, buf.data() + in, n);
      RETURN_IF_ERROR(file_.PWrite(buf.data(), cs_, at));
      RETURN_IF_ERROR(SetEntry(c, at));
    }
    pos += n;
  }
  return absl::OkStatus();
}

absl::Status QedImage::Flush() {
  std::lock_guard<std::mutex> l(mu_);
  if (file_.read_only()) return absl::OkStatus();
  RETURN_IF_ERROR(file_.DataSync());
  return SetNeedCheck(false);
}

absl::Status QedImage::Discard(uint64_t offset, uint64_t len) {
  return CheckRange(offset, len);  // QED cannot free clusters: a no-op hint
}

absl::Status QedImage::WriteZeroes(uint64_t offset, uint64_t len) {
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (file_.read_only()) return absl::PermissionDeniedError(file_.name() + " is read-only");
  std::vector<uint8_t> zeros(cs_, 0);
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t g = offset + pos, in = g % cs_;
    const uint64_t n = std::min(cs_ - in, len - pos);
    if (in == 0 && (n == cs_ || g + n == size_)) {
      std::lock_guard<std::mutex> l(mu_);
      ASSIGN_OR_RETURN(uint64_t e, Lookup(g / cs_));
      if (e > kZeroCluster) {
        // No refcounts to free it with: zero the cluster in place.
        RETURN_IF_ERROR(file_.ZeroRange(e, cs_));
      } else if (e == 0 && backing_) {
        RETURN_IF_ERROR(SetEntry(g / cs_, kZeroCluster));
      }
    } else {
      RETURN_IF_ERROR(Write(g, zeros.data(), n));
    }
    pos += n;
  }
  return absl::OkStatus();
}

std::optional<DirectMapping> QedImage::MapDirect(uint64_t offset, uint64_t len,
                                                bool write) {
  if (len == 0 || !CheckRange(offset, len).ok() || (write && file_.read_only())) {
    return std::nullopt;
  }
  DirectMapping m;  // releases what it holds if we give up half-way
  std::unique_lock<std::mutex> l(mu_, std::try_to_lock);
  if (!l.owns_lock()) return std::nullopt;
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t g = offset + pos, c = g / cs_, in = g % cs_;
    const uint64_t n = std::min(cs_ - in, len - pos);
    const uint64_t l2 = l1_[c / entries_];
    uint64_t e = 0;
    if (l2 != 0) {
      auto it = l2_.find(l2);
      if (it == l2_.end()) return std::nullopt;  // not cached: ReadV loads it
      e = it->second[c % entries_];
    }
    if (e > kZeroCluster) {
      if (e % cs_ || e >= file_end_) return std::nullopt;  // ReadV says why
      AppendExtent(m.extents, {&file_, e + in, n});
    } else if (write) {
      return std::nullopt;  // needs a new cluster
    } else if (e == kZeroCluster) {
      AppendExtent(m.extents, {nullptr, 0, n});
    } else if (!MapBacking(backing_.get(), backing_ ? backing_->size() : 0, g, n, m)) {
      return std::nullopt;
    }
    pos += n;
  }
  return m;
}

absl::StatusOr<Extent> QedImage::BlockStatus(uint64_t offset, uint64_t len) {
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (len == 0) return Extent{ExtentKind::kData, 0};
  std::lock_guard<std::mutex> l(mu_);
  auto kind = [](uint64_t e) {
    return e == 0 ? ExtentKind::kUnallocated : e == kZeroCluster ? ExtentKind::kZero : ExtentKind::kData;
  };
  ASSIGN_OR_RETURN(uint64_t e, Lookup(offset / cs_));
  const ExtentKind k = kind(e);
  uint64_t run = std::min(cs_ - offset % cs_, len);
  while (run < len) {
    ASSIGN_OR_RETURN(uint64_t n, Lookup((offset + run) / cs_));
    if (kind(n) != k) break;
    run += std::min(cs_, len - run);
  }
  return Extent{k, run};
}

absl::StatusOr<QedCheckResult> QedImage::Check(bool repair) {
  std::lock_guard<std::mutex> l(mu_);
  QedCheckResult r;
  ASSIGN_OR_RETURN(uint64_t fsize, file_.Size());
  const uint64_t end = (fsize + cs_ - 1) / cs_ * cs_;
  std::vector<bool> used(end / cs_, false);
  auto mark = [&](uint64_t off, uint64_t len) {
    for (uint64_t c = off / cs_; c < (off + len) / cs_ && c < used.size(); ++c) used[c] = true;
  };
  mark(0, header_clusters_ * cs_);
  mark(l1_offset_, table_bytes_);
  for (uint64_t i = 0; i < l1_.size(); ++i) {
    const uint64_t off = l1_[i];
    if (off == 0) continue;
    if (off % cs_ || off + table_bytes_ > end) {
      ++r.corruptions;
      if (repair) {
        l1_[i] = 0;
        uint8_t z[8] = {};
        RETURN_IF_ERROR(file_.PWrite(z, 8, l1_offset_ + i * 8));
        ++r.fixed;
      }
      continue;
    }
    mark(off, table_bytes_);
    std::vector<uint64_t> t(entries_);
    RETURN_IF_ERROR(file_.PRead(t.data(), table_bytes_, off));
    bool dirty = false;
    for (uint64_t& e : t) {
      if (e <= kZeroCluster) continue;
      if (e % cs_ || e + cs_ > end) {
        ++r.corruptions;
        if (repair) {
          e = 0;
          dirty = true;
          ++r.fixed;
        }
        continue;
      }
      mark(e, cs_);
    }
    if (dirty) {
      RETURN_IF_ERROR(WriteTable(off, t));
      l2_.erase(off);
    }
  }
  for (uint64_t c = 1; c < used.size(); ++c) r.leaks += !used[c];
  return r;
}

}  // namespace block
