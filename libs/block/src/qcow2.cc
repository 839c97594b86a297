// qcow2: open, cluster mapping, read/write, the metadata caches and flush.
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"
#include "libs/block/src/endian.h"
#include "libs/block/src/qcow2_image.h"

namespace block {

using internal::LoadBe64;
using internal::StoreBe32;
using internal::StoreBe64;

namespace qcow2 {
namespace {

struct FreeDeleter {
  void operator()(uint8_t* p) const { free(p); }
};
using AlignedBuf = std::unique_ptr<uint8_t[], FreeDeleter>;

AlignedBuf Aligned(size_t n) {
  void* p = nullptr;
  if (posix_memalign(&p, kDirectAlignment, std::max<size_t>(n, 1)) != 0) {
    return nullptr;
  }
  return AlignedBuf(static_cast<uint8_t*>(p));
}

const uint8_t* Zeros() {
  static const uint8_t* z = [] {
    void* p = nullptr;
    if (posix_memalign(&p, kDirectAlignment, 1 << kMaxClusterBits) != 0) abort();
    memset(p, 0, 1 << kMaxClusterBits);
    return static_cast<const uint8_t*>(p);
  }();
  return z;
}

}  // namespace

Table* TableCache::Find(uint64_t off) {
  auto it = map_.find(off);
  if (it == map_.end()) return nullptr;
  it->second.lru = ++clock_;
  return &it->second;
}

Table* TableCache::Insert(uint64_t off, std::vector<uint8_t> data, bool dirty) {
  Table& t = map_[off];
  t.data = std::move(data);
  t.dirty = dirty;
  t.lru = ++clock_;
  return &t;
}

uint64_t TableCache::Victim() const {
  uint64_t best = 0, lru = ~0ULL;
  for (const auto& [off, t] : map_) {
    if (t.lru < lru) {
      lru = t.lru;
      best = off;
    }
  }
  return best;
}

Qcow2::Qcow2(File file) : file_(std::move(file)) {}

Qcow2::~Qcow2() {
  if (writable_) {
    Lock lock(mu_);
    // The second flush writes the refcounts the first one released.
    if (FlushLocked(lock).ok()) (void)FlushLocked(lock);
  }
}

absl::StatusOr<std::unique_ptr<Qcow2>> Qcow2::OpenImpl(
    File file, const OpenOptions& options, std::vector<std::string>* chain) {
  std::unique_ptr<Qcow2> q(new Qcow2(std::move(file)));
  RETURN_IF_ERROR(q->Load(options, chain));
  return q;
}

absl::Status Qcow2::Load(const OpenOptions& options,
                         std::vector<std::string>* chain) {
  const std::string& name = file_.name();
  ASSIGN_OR_RETURN(uint64_t fsize, file_.Size());
  std::vector<uint8_t> c0(std::min<uint64_t>(fsize, 512));
  RETURN_IF_ERROR(file_.PRead(c0.data(), c0.size(), 0));
  if (c0.size() >= 24) {
    uint32_t bits = internal::LoadBe32(&c0[20]);
    if (bits >= kMinClusterBits && bits <= kMaxClusterBits) {
      c0.resize(std::min<uint64_t>(fsize, 1ULL << bits));
      RETURN_IF_ERROR(file_.PRead(c0.data(), c0.size(), 0));
    }
  }
  ASSIGN_OR_RETURN(h_, ParseHeader(c0, fsize, name));
  writable_ = !file_.read_only();
  if (writable_ && (h_.incompatible_features & kIncompatCorrupt)) {
    corrupt_ = true;  // writes refused until Check(kAll) clears it
  }
  if (writable_ && (h_.incompatible_features & kIncompatCorrupt) && !options.repair_corrupt) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: image is marked corrupt (incompatible feature bit 1); open it "
        "read-only, or repair it with `kindling-img check -r all`",
        name));
  }
  if (writable_ && (h_.incompatible_features & kIncompatDirty) &&
      !options.repair_dirty) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: image is dirty (incompatible feature bit 0): its refcounts may "
        "be stale; repair it with `kindling-img check -r all`",
        name));
  }
  cb_ = h_.cluster_bits;
  cs_ = 1ULL << cb_;
  l2_entries_ = cs_ / 8;
  const uint32_t rbits = 1u << h_.refcount_order;
  rb_entries_ = cs_ * 8 / rbits;
  rc_max_ = rbits == 64 ? ~0ULL : (1ULL << rbits) - 1;
  csize_shift_ = 62 - (cb_ - 8);
  csize_mask_ = (1ULL << (cb_ - 8)) - 1;
  coffset_mask_ = (1ULL << csize_shift_) - 1;
  size_ = h_.size;
  file_size_ = fsize;
  end_cluster_ = (fsize + cs_ - 1) >> cb_;
  zero_from_ = end_cluster_ << cb_;
  uint64_t cache = options.cache_size ? options.cache_size : (4ULL << 20);
  l2_cache_ = TableCache(cache / cs_);
  rb_cache_ = TableCache(std::max<uint64_t>(cache / 4, 256 << 10) / cs_);

  ASSIGN_OR_RETURN(l1_, ReadL1(h_.l1_table_offset, h_.l1_size));
  ASSIGN_OR_RETURN(reftable_, ReadL1(h_.refcount_table_offset,
                                     h_.refcount_table_clusters * cs_ / 8));
  if (h_.nb_snapshots > 0) {
    uint64_t avail = std::min<uint64_t>(fsize - h_.snapshots_offset,
                                        kMaxSnapshotTableBytes);
    uint64_t want = std::min<uint64_t>(avail, uint64_t(h_.nb_snapshots) *
                                                  (40 + 1024 + 2 * 65535 + 8));
    std::vector<uint8_t> t(want);
    RETURN_IF_ERROR(file_.PRead(t.data(), t.size(), h_.snapshots_offset));
    ASSIGN_OR_RETURN(snapshots_,
                     ParseSnapshotTable(t, h_.nb_snapshots, cb_, fsize, name,
                                        h_.snapshots_offset));
    uint64_t total = 0;
    for (const Snapshot& s : snapshots_) total += s.l1_size;
    if (total * 8 > 16 * kMaxL1Bytes) {
      return absl::DataLossError(absl::StrFormat(
          "%s: qcow2 snapshot table (offset 0x%x): the snapshots' L1 tables "
          "total %u entries, above the %u limit",
          name, h_.snapshots_offset, total, 16 * kMaxL1Bytes / 8));
    }
  }
  if (!h_.backing_file.empty() && chain != nullptr) {
    std::string path = h_.backing_file;
    if (path[0] != '/') {
      size_t slash = name.rfind('/');
      if (slash != std::string::npos) path = name.substr(0, slash + 1) + path;
    }
    OpenOptions bo = options;
    bo.read_only = true;
    bo.format = h_.backing_format;
    auto b = OpenImageInChain(path, bo, *chain);
    if (!b.ok()) {
      return absl::Status(b.status().code(),
                          absl::StrFormat("%s: backing file: %s", name,
                                          b.status().message()));
    }
    backing_ = std::move(*b);
    backing_size_ = backing_->size();
  }
  if (writable_ && h_.version == 3 && h_.autoclear_features != 0) {
    // We do not maintain what the autoclear bits promise (bitmaps): clear.
    uint8_t zero[8] = {};
    RETURN_IF_ERROR(WriteHeaderBytes(kOffAutoclear, zero, 8));
    h_.autoclear_features = 0;
  }
  if (writable_ && (h_.incompatible_features & kIncompatDirty)) {
    ASSIGN_OR_RETURN(CheckResult r, Check(RepairMode::kAll));
    if (r.corruptions > r.corruptions_fixed) {
      return absl::DataLossError(absl::StrFormat(
          "%s: dirty image has %u corruptions that repair could not fix", name,
          r.corruptions - r.corruptions_fixed));
    }
    h_.incompatible_features &= ~kIncompatDirty;
    RETURN_IF_ERROR(WriteIncompatibleFeatures());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> Qcow2::ReadL1(uint64_t off, uint32_t n) {
  std::vector<uint64_t> v(n);
  if (n == 0) return v;
  RETURN_IF_ERROR(file_.PRead(v.data(), uint64_t(n) * 8, off));
  for (auto& e : v) e = __builtin_bswap64(e);
  return v;
}

uint64_t Qcow2::size() const { return size_.load(); }

Capabilities Qcow2::capabilities() const {
  return {.read_only = !writable_,
          .discard = true,
          .write_zeroes = h_.version == 3,
          .backing = backing_ != nullptr};
}

Qcow2Info Qcow2::info() {
  Lock lock(mu_);
  Qcow2Info i;
  i.version = h_.version;
  i.cluster_size = cs_;
  i.refcount_bits = 1u << h_.refcount_order;
  i.zstd = h_.compression_type == CompressionType::kZstd;
  i.dirty = h_.incompatible_features & kIncompatDirty;
  i.corrupt = (h_.incompatible_features & kIncompatCorrupt) || corrupt_;
  i.lazy_refcounts = h_.compatible_features & kCompatLazyRefcounts;
  i.backing_file = h_.backing_file;
  i.backing_format = h_.backing_format;
  for (const Snapshot& s : snapshots_) {
    i.snapshots.push_back({s.id, s.name, s.vm_state_size, s.date_sec,
                           s.date_nsec, s.vm_clock_nsec, s.disk_size});
  }
  return i;
}

Mapping Qcow2::Decode(uint64_t e) const {
  Mapping m{};
  m.copied = e & kOflagCopied;
  if (e & kOflagCompressed) {
    m.kind = Kind::kCompressed;
    m.host = e & coffset_mask_;
    uint64_t sectors = ((e >> csize_shift_) & csize_mask_) + 1;
    m.csize = sectors * 512 - (m.host & 511);
    return m;
  }
  m.host = e & kOffsetMask;
  if (h_.version >= 3 && (e & kOflagZero)) {
    m.kind = Kind::kZero;
  } else {
    m.kind = m.host ? Kind::kNormal : Kind::kUnallocated;
  }
  return m;
}

absl::Status Qcow2::MarkCorrupt(const std::string& why) {
  std::string msg = absl::StrFormat("%s: %s", file_.name(), why);
  if (writable_ && !corrupt_ && h_.version == 3) {
    corrupt_ = true;
    h_.incompatible_features |= kIncompatCorrupt;
    (void)WriteIncompatibleFeatures();  // best effort: the error follows anyway
    msg += "; image marked corrupt";
  }
  corrupt_ = true;
  return absl::DataLossError(msg);
}

absl::Status Qcow2::WritableCheck() const {
  if (!writable_) {
    return absl::PermissionDeniedError(
        absl::StrFormat("%s is open read-only", file_.name()));
  }
  if (corrupt_) {
    return absl::DataLossError(absl::StrFormat(
        "%s is marked corrupt; writes are refused", file_.name()));
  }
  return absl::OkStatus();
}

bool Qcow2::HostClusterValid(uint64_t host) const {
  auto overlaps = [&](uint64_t off, uint64_t len) {
    return host < off + len && off < host + cs_;
  };
  return host % cs_ == 0 && host != 0 && host < file_size_ &&
         !overlaps(h_.l1_table_offset, uint64_t(h_.l1_size) * 8) &&
         !overlaps(h_.refcount_table_offset,
                   uint64_t(h_.refcount_table_clusters) * cs_);
}

absl::Status Qcow2::CheckHostCluster(uint64_t host, const char* what,
                                     uint64_t where) const {
  if (!HostClusterValid(host)) {
    return const_cast<Qcow2*>(this)->MarkCorrupt(absl::StrFormat(
        "%s for guest offset 0x%x points to host offset 0x%x, which is "
        "unaligned, past the end of the file or overlaps metadata",
        what, where, host));
  }
  return absl::OkStatus();
}

uint64_t Qcow2::L2Get(const Table& t, uint64_t idx) const {
  return LoadBe64(&t.data[idx * 8]);
}

void Qcow2::L2Set(Table& t, uint64_t idx, uint64_t v) {
  StoreBe64(&t.data[idx * 8], v);
  t.dirty = true;
}

absl::Status Qcow2::WriteTable(uint64_t off, Table& t) {
  RETURN_IF_ERROR(file_.PWrite(t.data.data(), t.data.size(), off));
  t.dirty = false;
  return absl::OkStatus();
}

absl::Status Qcow2::MakeRoom(TableCache& cache, bool l2) {
  while (cache.Full()) {
    uint64_t off = cache.Victim();
    Table* t = cache.Find(off);
    if (t->dirty) {
      if (l2) {
        // An L2 table may only reach the disk after the data and refcounts
        // it points at.
        RETURN_IF_ERROR(WriteRefcountMeta());
        RETURN_IF_ERROR(file_.DataSync());
        t = cache.Find(off);
      }
      RETURN_IF_ERROR(WriteTable(off, *t));
    }
    cache.Erase(off);
  }
  return absl::OkStatus();
}

absl::StatusOr<Table*> Qcow2::LoadTable(TableCache& cache, uint64_t off,
                                        bool l2) {
  if (Table* t = cache.Find(off)) return t;
  if (off % cs_ != 0 || off == 0 || off > file_size_ || cs_ > file_size_ - off) {
    std::string why = absl::StrFormat(
        "%s at host offset 0x%x is unaligned or past the end of the file "
        "(0x%x bytes)",
        l2 ? "L2 table" : "refcount block", off, file_size_);
    if (writable_) return MarkCorrupt(why);
    return absl::DataLossError(absl::StrFormat("%s: %s", file_.name(), why));
  }
  RETURN_IF_ERROR(MakeRoom(cache, l2));
  std::vector<uint8_t> data(cs_);
  RETURN_IF_ERROR(file_.PRead(data.data(), cs_, off));
  return cache.Insert(off, std::move(data), false);
}

absl::StatusOr<Table*> Qcow2::GetL2(uint64_t i) {
  if (i >= l1_.size()) return nullptr;
  uint64_t off = l1_[i] & kOffsetMask;
  if (off == 0) return nullptr;
  return LoadTable(l2_cache_, off, true);
}

absl::StatusOr<Table*> Qcow2::GetL2ForWrite(uint64_t i) {
  if (i >= l1_.size()) {
    return absl::InternalError(absl::StrFormat("L1 index %u out of range", i));
  }
  const uint64_t e = l1_[i];
  const uint64_t off = e & kOffsetMask;
  if (off != 0 && (e & kOflagCopied)) return LoadTable(l2_cache_, off, true);
  std::vector<uint8_t> data(cs_, 0);
  if (off != 0) {  // shared with a snapshot: copy on write
    ASSIGN_OR_RETURN(Table * old, LoadTable(l2_cache_, off, true));
    data = old->data;
  }
  bool fresh;
  ASSIGN_OR_RETURN(uint64_t n, AllocateClusters(1, &fresh));
  RETURN_IF_ERROR(EnsureFileSize(n + cs_));
  RETURN_IF_ERROR(MakeRoom(l2_cache_, true));
  Table* t = l2_cache_.Insert(n, std::move(data), true);
  if (off != 0) pending_free_.push_back({off >> cb_, 1});
  l1_[i] = n | kOflagCopied;
  l1_dirty_lo_ = std::min(l1_dirty_lo_, i);
  l1_dirty_hi_ = std::max(l1_dirty_hi_, i + 1);
  return t;
}

absl::StatusOr<Mapping> Qcow2::MapCluster(uint64_t c) {
  ASSIGN_OR_RETURN(Table * t, GetL2(c / l2_entries_));
  if (t == nullptr) return Mapping{Kind::kUnallocated};
  return Decode(L2Get(*t, c % l2_entries_));
}

uint64_t Qcow2::BeginIo() {
  uint64_t seq = ++io_seq_;
  active_io_.insert(seq);
  return seq;
}

void Qcow2::EndIo(uint64_t seq) {
  active_io_.erase(active_io_.find(seq));
  cv_.notify_all();
}

void Qcow2::WaitAllocs(uint64_t first, uint64_t count, Lock& lock) {
  cv_.wait(lock, [&] {
    auto it = allocating_.lower_bound(first);
    return it == allocating_.end() || *it >= first + count;
  });
}

absl::Status Qcow2::ReadBacking(uint64_t offset, std::span<const iovec> out) {
  return block::ReadBacking(backing_.get(), backing_size_, offset, out);
}

absl::Status Qcow2::ReadCompressed(const Mapping& m, std::vector<uint8_t>& out) {
  std::vector<uint8_t> in(m.csize);
  RETURN_IF_ERROR(file_.PRead(in.data(), in.size(), m.host));
  out.assign(cs_, 0);
  auto bad = [&](const char* why) {
    return absl::DataLossError(absl::StrFormat(
        "%s: compressed cluster at host offset 0x%x (%u bytes): %s",
        file_.name(), m.host, m.csize, why));
  };
  if (h_.compression_type == CompressionType::kZlib) {
    z_stream z{};
    if (inflateInit2(&z, -12) != Z_OK) return bad("inflateInit2 failed");
    z.next_in = in.data();
    z.avail_in = in.size();
    z.next_out = out.data();
    z.avail_out = out.size();
    int r = inflate(&z, Z_FINISH);
    bool ok = (r == Z_STREAM_END || r == Z_BUF_ERROR || r == Z_OK) &&
              z.avail_out == 0;
    inflateEnd(&z);
    if (!ok) return bad("deflate data is invalid or short");
    return absl::OkStatus();
  }
  ZSTD_DCtx* d = ZSTD_createDCtx();
  if (d == nullptr) return bad("ZSTD_createDCtx failed");
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  size_t r = 1;
  while (ob.pos < ob.size && ib.pos < ib.size) {
    r = ZSTD_decompressStream(d, &ob, &ib);
    if (ZSTD_isError(r) || r == 0) break;
  }
  ZSTD_freeDCtx(d);
  if (ZSTD_isError(r) || ob.pos != ob.size) return bad("zstd data is invalid or short");
  return absl::OkStatus();
}

absl::Status Qcow2::ReadCluster(const Mapping& m, uint64_t guest_cluster,
                                uint64_t in_off, std::span<const iovec> out,
                                Lock& lock) {
  const uint64_t len = IovLength(out);
  switch (m.kind) {
    case Kind::kZero:
      IovZero(out);
      return absl::OkStatus();
    case Kind::kUnallocated: {
      if (!backing_) {
        IovZero(out);
        return absl::OkStatus();
      }
      lock.unlock();
      absl::Status s = ReadBacking((guest_cluster << cb_) + in_off, out);
      lock.lock();
      return s;
    }
    case Kind::kNormal: {
      uint64_t seq = BeginIo();
      lock.unlock();
      absl::Status s = file_.PReadV(out, m.host + in_off);
      lock.lock();
      EndIo(seq);
      return s;
    }
    case Kind::kCompressed: {
      uint64_t seq = BeginIo();
      lock.unlock();
      std::vector<uint8_t> buf;
      absl::Status s = ReadCompressed(m, buf);
      if (s.ok()) IovCopyIn(out, 0, buf.data() + in_off, len);
      lock.lock();
      EndIo(seq);
      return s;
    }
  }
  return absl::InternalError("bad mapping kind");
}

absl::Status Qcow2::ReadV(uint64_t offset, std::span<const iovec> iov) {
  const uint64_t len = IovLength(iov);
  RETURN_IF_ERROR(CheckRange(offset, len));
  Lock lock(mu_);
  uint64_t pos = 0;
  while (pos < len) {
    const uint64_t g = offset + pos;
    const uint64_t c = g >> cb_;
    const uint64_t in = g & (cs_ - 1);
    ASSIGN_OR_RETURN(Mapping m, MapCluster(c));
    uint64_t run = std::min(cs_ - in, len - pos);
    // Merge following clusters of the same kind (host-contiguous for data).
    for (uint64_t k = 1; pos + run < len && m.kind != Kind::kCompressed; ++k) {
      ASSIGN_OR_RETURN(Mapping n, MapCluster(c + k));
      if (n.kind != m.kind ||
          (m.kind == Kind::kNormal && n.host != m.host + k * cs_)) {
        break;
      }
      run += std::min(cs_, len - pos - run);
    }
    RETURN_IF_ERROR(ReadCluster(m, c, in, IovSlice(iov, pos, run), lock));
    pos += run;
  }
  return absl::OkStatus();
}

std::optional<Mapping> Qcow2::CachedMapping(uint64_t c, bool write) {
  if (allocating_.count(c)) return std::nullopt;  // WriteRun is filling it
  const uint64_t i = c / l2_entries_;
  if (i >= l1_.size()) return std::nullopt;
  const uint64_t off = l1_[i] & kOffsetMask;
  if (off == 0) return Mapping{Kind::kUnallocated};
  if (write && !(l1_[i] & kOflagCopied)) return std::nullopt;  // shared L2 table
  Table* t = l2_cache_.Find(off);
  if (t == nullptr) return std::nullopt;  // ReadV/WriteV load it
  return Decode(L2Get(*t, c % l2_entries_));
}

std::optional<DirectMapping> Qcow2::MapDirect(uint64_t offset, uint64_t len,
                                              bool write) {
  if (len == 0 || !CheckRange(offset, len).ok()) return std::nullopt;
  Lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock() || (write && !WritableCheck().ok())) return std::nullopt;
  DirectMapping m;  // releases the backing's leases if we give up half-way
  bool own = false;
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t g = offset + pos;
    const uint64_t n = std::min(cs_ - (g & (cs_ - 1)), len - pos);
    std::optional<Mapping> c = CachedMapping(g >> cb_, write);
    if (!c || c->kind == Kind::kCompressed) return std::nullopt;
    if (write && (c->kind != Kind::kNormal || !c->copied)) return std::nullopt;
    if (c->kind == Kind::kNormal) {
      if (!HostClusterValid(c->host)) return std::nullopt;  // ReadV/WriteV say why
      AppendExtent(m.extents, {&file_, c->host + (g & (cs_ - 1)), n});
      own = true;
    } else if (c->kind == Kind::kZero) {
      AppendExtent(m.extents, {nullptr, 0, n});
    } else if (!MapBacking(backing_.get(), backing_size_, g, n, m)) {
      return std::nullopt;
    }
    pos += n;
  }
  if (own) {
    DirectMapping lease;
    lease.release = [this, seq = BeginIo()] {
      Lock l(mu_);
      EndIo(seq);
    };
    m.Append(std::move(lease));
  }
  return m;
}

void Qcow2::FreeEntry(const Mapping& m) {
  if (m.kind == Kind::kCompressed) {
    uint64_t first = m.host >> cb_;
    uint64_t last = (m.host + m.csize - 1) >> cb_;
    pending_free_.push_back({first, last - first + 1});
  } else if ((m.kind == Kind::kNormal || m.kind == Kind::kZero) && m.host) {
    pending_free_.push_back({m.host >> cb_, 1});
  }
}

absl::Status Qcow2::WriteRun(uint64_t g, std::span<const iovec> iov,
                             uint64_t* consumed, Lock& lock) {
  const uint64_t len = IovLength(iov);
  const uint64_t c = g >> cb_;
  const uint64_t in = g & (cs_ - 1);
  WaitAllocs(c, 1, lock);
  RETURN_IF_ERROR(WritableCheck());
  const uint64_t l1i = c / l2_entries_;
  const uint64_t idx = c % l2_entries_;
  ASSIGN_OR_RETURN(Table * t, GetL2ForWrite(l1i));
  const Mapping m = Decode(L2Get(*t, idx));
  uint64_t covered = std::min(cs_ - in, len);
  uint64_t k = 1;
  if (m.kind == Kind::kNormal && m.copied) {
    // Overwrite in place, merging host-contiguous clusters.
    while (covered < len && idx + k < l2_entries_ && !allocating_.count(c + k)) {
      Mapping n = Decode(L2Get(*t, idx + k));
      if (n.kind != Kind::kNormal || !n.copied || n.host != m.host + k * cs_) break;
      covered += std::min(cs_, len - covered);
      ++k;
    }
    RETURN_IF_ERROR(CheckHostCluster(m.host, "L2 entry", g));
    uint64_t seq = BeginIo();
    lock.unlock();
    absl::Status s = file_.PWriteV(IovSlice(iov, 0, covered), m.host + in);
    lock.lock();
    EndIo(seq);
    *consumed = covered;
    return s;
  }
  // Allocate: this cluster and the following ones the write also reaches.
  std::vector<Mapping> olds = {m};
  while (covered < len && idx + k < l2_entries_ && !allocating_.count(c + k)) {
    Mapping n = Decode(L2Get(*t, idx + k));
    if (n.kind == Kind::kNormal && n.copied) break;
    olds.push_back(n);
    covered += std::min(cs_, len - covered);
    ++k;
  }
  bool fresh = false;
  ASSIGN_OR_RETURN(uint64_t host, AllocateClusters(k, &fresh));
  RETURN_IF_ERROR(EnsureFileSize(host + k * cs_));
  for (uint64_t i = 0; i < k; ++i) allocating_.insert(c + i);
  const uint64_t head = in;
  const uint64_t tail_start = in + covered;  // within the k clusters
  const uint64_t tail = k * cs_ - tail_start;
  auto known_zero = [&](const Mapping& o, uint64_t guest_off) {
    return o.kind == Kind::kZero ||
           (o.kind == Kind::kUnallocated &&
            (!backing_ || guest_off >= backing_size_));
  };
  const bool head_zero = known_zero(olds.front(), c << cb_);
  const bool tail_zero = known_zero(olds.back(), (c + k - 1) << cb_);
  uint64_t seq = BeginIo();
  lock.unlock();
  absl::Status s;
  AlignedBuf head_buf, tail_buf;
  std::vector<iovec> vec;
  uint64_t write_off = host;
  auto read_old = [&](const Mapping& o, uint64_t cluster, uint64_t off,
                      uint64_t n, uint8_t* dst) -> absl::Status {
    iovec v{dst, n};
    switch (o.kind) {
      case Kind::kZero:
        memset(dst, 0, n);
        return absl::OkStatus();
      case Kind::kUnallocated:
        return ReadBacking((cluster << cb_) + off, {&v, 1});
      case Kind::kNormal:
        return file_.PRead(dst, n, o.host + off);
      case Kind::kCompressed: {
        std::vector<uint8_t> buf;
        RETURN_IF_ERROR(ReadCompressed(o, buf));
        memcpy(dst, buf.data() + off, n);
        return absl::OkStatus();
      }
    }
    return absl::OkStatus();
  };
  if (head > 0) {
    if (head_zero && fresh) {
      write_off += head;
    } else if (head_zero) {
      vec.push_back({const_cast<uint8_t*>(Zeros()), head});
    } else {
      head_buf = Aligned(head);
      s = read_old(olds.front(), c, 0, head, head_buf.get());
      vec.push_back({head_buf.get(), head});
    }
  }
  for (const iovec& v : IovSlice(iov, 0, covered)) vec.push_back(v);
  if (s.ok() && tail > 0) {
    const uint64_t t_in = tail_start - (k - 1) * cs_;
    if (tail_zero && fresh) {
      // the file already reads zeros there
    } else if (tail_zero) {
      vec.push_back({const_cast<uint8_t*>(Zeros()), tail});
    } else {
      tail_buf = Aligned(tail);
      s = read_old(olds.back(), c + k - 1, t_in, tail, tail_buf.get());
      vec.push_back({tail_buf.get(), tail});
    }
  }
  if (s.ok()) s = file_.PWriteV(vec, write_off);
  lock.lock();
  EndIo(seq);
  auto release = [&] {
    for (uint64_t i = 0; i < k; ++i) allocating_.erase(c + i);
    cv_.notify_all();
  };
  if (!s.ok()) {
    pending_free_.push_back({host >> cb_, k});
    release();
    return s;
  }
  auto t2 = GetL2ForWrite(l1i);
  if (!t2.ok()) {
    release();
    return t2.status();
  }
  for (uint64_t i = 0; i < k; ++i) {
    FreeEntry(Decode(L2Get(**t2, idx + i)));
    L2Set(**t2, idx + i, (host + i * cs_) | kOflagCopied);
  }
  release();
  *consumed = covered;
  return absl::OkStatus();
}

absl::Status Qcow2::WriteV(uint64_t offset, std::span<const iovec> iov) {
  RETURN_IF_ERROR(WritableCheck());
  const uint64_t len = IovLength(iov);
  RETURN_IF_ERROR(CheckRange(offset, len));
  Lock lock(mu_);
  for (uint64_t pos = 0; pos < len;) {
    uint64_t consumed = 0;
    RETURN_IF_ERROR(WriteRun(offset + pos, IovSlice(iov, pos, len - pos),
                             &consumed, lock));
    pos += consumed;
  }
  return absl::OkStatus();
}

absl::Status Qcow2::ZeroOrDiscard(uint64_t offset, uint64_t len, bool discard) {
  RETURN_IF_ERROR(WritableCheck());
  RETURN_IF_ERROR(CheckRange(offset, len));
  Lock lock(mu_);
  const uint64_t end = offset + len;
  for (uint64_t g = offset; g < end;) {
    const uint64_t c = g >> cb_;
    const uint64_t in = g & (cs_ - 1);
    const uint64_t n = std::min(cs_ - in, end - g);
    const bool whole = in == 0 && (n == cs_ || g + n == size());
    const bool can_flag = h_.version >= 3;
    if (!whole || (!discard && !can_flag && backing_)) {
      if (discard) {  // a hint: partial clusters are left alone
        g += n;
        continue;
      }
      uint64_t done = 0;
      iovec v{const_cast<uint8_t*>(Zeros()), n};
      RETURN_IF_ERROR(WriteRun(g, {&v, 1}, &done, lock));
      g += done;
      continue;
    }
    WaitAllocs(c, 1, lock);
    const uint64_t l1i = c / l2_entries_;
    if ((l1_[l1i] & kOffsetMask) == 0 && !backing_) {  // reads zero already
      g += n;
      continue;
    }
    uint64_t want;
    if (backing_) {
      if (!can_flag) {  // v2 discard cannot hide the backing file
        g += n;
        continue;
      }
      want = kOflagZero;
    } else {
      want = can_flag && !discard ? kOflagZero : 0;
    }
    ASSIGN_OR_RETURN(Table * t, GetL2ForWrite(l1i));
    uint64_t cur = L2Get(*t, c % l2_entries_);
    if (cur != want) {
      FreeEntry(Decode(cur));
      L2Set(*t, c % l2_entries_, want);
    }
    g += n;
  }
  return absl::OkStatus();
}

absl::Status Qcow2::Discard(uint64_t offset, uint64_t len) {
  return ZeroOrDiscard(offset, len, true);
}

absl::Status Qcow2::WriteZeroes(uint64_t offset, uint64_t len) {
  return ZeroOrDiscard(offset, len, false);
}

absl::StatusOr<Extent> Qcow2::BlockStatus(uint64_t offset, uint64_t len) {
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (len == 0) return Extent{ExtentKind::kData, 0};
  Lock lock(mu_);
  auto kind_of = [](const Mapping& m) {
    switch (m.kind) {
      case Kind::kZero: return ExtentKind::kZero;
      case Kind::kUnallocated: return ExtentKind::kUnallocated;
      default: return ExtentKind::kData;
    }
  };
  const uint64_t c = offset >> cb_;
  ASSIGN_OR_RETURN(Mapping m, MapCluster(c));
  ExtentKind k = kind_of(m);
  uint64_t run = std::min(cs_ - (offset & (cs_ - 1)), len);
  for (uint64_t i = 1; run < len && i < 65536; ++i) {
    ASSIGN_OR_RETURN(Mapping n, MapCluster(c + i));
    if (kind_of(n) != k) break;
    run += std::min(cs_, len - run);
  }
  return Extent{k, run};
}

absl::Status Qcow2::WriteHeaderBytes(uint64_t off, const void* p, size_t n) {
  return file_.PWrite(p, n, off);
}

absl::Status Qcow2::WriteIncompatibleFeatures() {
  uint8_t b[8];
  StoreBe64(b, h_.incompatible_features);
  RETURN_IF_ERROR(WriteHeaderBytes(kOffIncompatible, b, 8));
  return file_.DataSync();
}

absl::Status Qcow2::WriteL1() {
  if (l1_dirty_lo_ >= l1_dirty_hi_) return absl::OkStatus();
  std::vector<uint64_t> be(l1_.begin() + l1_dirty_lo_, l1_.begin() + l1_dirty_hi_);
  for (auto& e : be) e = __builtin_bswap64(e);
  RETURN_IF_ERROR(file_.PWrite(be.data(), be.size() * 8,
                               h_.l1_table_offset + l1_dirty_lo_ * 8));
  l1_dirty_lo_ = ~0ULL;
  l1_dirty_hi_ = 0;
  return absl::OkStatus();
}

absl::Status Qcow2::FlushLocked(Lock& lock) {
  if (!writable_) return absl::OkStatus();
  std::vector<std::pair<uint64_t, uint64_t>> frees;
  frees.swap(pending_free_);
  auto restore = [&](absl::Status s) {
    pending_free_.insert(pending_free_.end(), frees.begin(), frees.end());
    return s;
  };
  // 1. Refcount blocks (and a grown refcount table) with the data.
  if (auto s = WriteRefcountMeta(); !s.ok()) return restore(s);
  if (auto s = file_.DataSync(); !s.ok()) return restore(s);
  // 2. L2 tables, which point at that data.
  bool any = false;
  for (auto& [off, t] : l2_cache_.entries()) {
    if (!t.dirty) continue;
    if (auto s = WriteTable(off, t); !s.ok()) return restore(s);
    any = true;
  }
  // 3. The L1 table, which points at those L2 tables.
  if (l1_dirty_lo_ < l1_dirty_hi_) {
    if (any) {
      if (auto s = file_.DataSync(); !s.ok()) return restore(s);
    }
    if (auto s = WriteL1(); !s.ok()) return restore(s);
    any = true;
  }
  if (any) {
    if (auto s = file_.DataSync(); !s.ok()) return restore(s);
  }
  // 4. Clusters whose last reference is now durably gone can be reused.
  if (!frees.empty()) return ApplyFrees(std::move(frees), lock);
  return absl::OkStatus();
}

absl::Status Qcow2::Flush() {
  Lock lock(mu_);
  return FlushLocked(lock);
}

absl::Status Qcow2::Shrink(uint64_t new_size) {
  {
    Lock lock(mu_);
    if (!snapshots_.empty()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s: cannot shrink an image with internal snapshots", file_.name()));
    }
  }
  // Like QEMU: whole clusters past the new end are freed, the one the new
  // end falls in stays. The L2 tables stay allocated (and referenced), so
  // growing again needs no new metadata.
  const uint64_t old = size();
  const uint64_t keep = std::min(old, (new_size + cs_ - 1) & ~(cs_ - 1));
  if (keep < old) RETURN_IF_ERROR(Discard(keep, old - keep));
  Lock lock(mu_);
  // The frees are durable before the header says the disk is smaller.
  RETURN_IF_ERROR(FlushLocked(lock));
  return CommitSize(new_size, lock);
}

absl::Status Qcow2::Resize(uint64_t new_size) {
  RETURN_IF_ERROR(WritableCheck());
  if (new_size < size()) return Shrink(new_size);
  Lock lock(mu_);
  if (new_size > kMaxDiskSize) {
    return absl::InvalidArgumentError("size above the qcow2 limit");
  }
  if (!snapshots_.empty()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: cannot resize an image with internal snapshots", file_.name()));
  }
  RETURN_IF_ERROR(FlushLocked(lock));
  const uint64_t need = L1EntriesFor(new_size, cb_);
  if (need * 8 > kMaxL1Bytes) {
    return absl::InvalidArgumentError("L1 table would exceed 32 MiB");
  }
  if (need > l1_.size()) {
    const uint64_t clusters = (need * 8 + cs_ - 1) / cs_;
    bool fresh;
    ASSIGN_OR_RETURN(uint64_t off, AllocateClusters(clusters, &fresh));
    RETURN_IF_ERROR(EnsureFileSize(off + clusters * cs_));
    RETURN_IF_ERROR(WriteRefcountMeta());
    std::vector<uint64_t> be(clusters * cs_ / 8, 0);
    for (size_t i = 0; i < l1_.size(); ++i) be[i] = __builtin_bswap64(l1_[i]);
    RETURN_IF_ERROR(file_.PWrite(be.data(), be.size() * 8, off));
    RETURN_IF_ERROR(file_.DataSync());
    uint8_t hb[12];
    StoreBe32(hb, need);
    StoreBe64(hb + 4, off);
    RETURN_IF_ERROR(WriteHeaderBytes(kOffL1Size, hb, 12));
    RETURN_IF_ERROR(file_.DataSync());
    const uint64_t old_clusters = (uint64_t(h_.l1_size) * 8 + cs_ - 1) / cs_;
    if (h_.l1_size > 0) {
      pending_free_.push_back({h_.l1_table_offset >> cb_, old_clusters});
    }
    h_.l1_table_offset = off;
    h_.l1_size = need;
    l1_.resize(need, 0);
  }
  return CommitSize(new_size, lock);
}

absl::Status Qcow2::CommitSize(uint64_t new_size, Lock& lock) {
  uint8_t sb[8];
  StoreBe64(sb, new_size);
  RETURN_IF_ERROR(WriteHeaderBytes(kOffSize, sb, 8));
  h_.size = new_size;
  size_ = new_size;
  return FlushLocked(lock);
}

}  // namespace qcow2

absl::StatusOr<std::unique_ptr<Qcow2Image>> Qcow2Image::Open(
    const std::string& path, const OpenOptions& options) {
  std::vector<std::string> chain;
  return OpenInChain(path, options, chain);
}

absl::StatusOr<std::unique_ptr<Qcow2Image>> Qcow2Image::OpenInChain(
    const std::string& path, const OpenOptions& options,
    std::vector<std::string>& chain) {
  ASSIGN_OR_RETURN(File f, File::Open(path, {.read_only = options.read_only,
                                             .direct = options.direct}));
  if (chain.empty()) {
    char* real = ::realpath(path.c_str(), nullptr);
    if (real) {
      chain.push_back(real);
      free(real);
    }
  }
  ASSIGN_OR_RETURN(auto q, qcow2::Qcow2::OpenImpl(std::move(f), options, &chain));
  return std::unique_ptr<Qcow2Image>(std::move(q));
}

absl::StatusOr<std::unique_ptr<Qcow2Image>> Qcow2Image::OpenFile(
    File file, const OpenOptions& options) {
  ASSIGN_OR_RETURN(auto q, qcow2::Qcow2::OpenImpl(std::move(file), options, nullptr));
  return std::unique_ptr<Qcow2Image>(std::move(q));
}

}  // namespace block
