// The qcow2 implementation class (internal). Split over qcow2.cc (open,
// mapping, read/write, caches, flush), qcow2_refcount.cc (refcounts and
// cluster allocation), qcow2_check.cc (check/repair), qcow2_snapshot.cc.
#ifndef KINDLING_BLOCK_SRC_QCOW2_IMAGE_H_
#define KINDLING_BLOCK_SRC_QCOW2_IMAGE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "block/qcow2.h"
#include "libs/block/src/qcow2_format.h"

namespace block::qcow2 {

// One cached metadata cluster (an L2 table or a refcount block).
struct Table {
  std::vector<uint8_t> data;
  bool dirty = false;
  uint64_t lru = 0;
};

class TableCache {
 public:
  explicit TableCache(size_t capacity) : capacity_(capacity < 4 ? 4 : capacity) {}
  Table* Find(uint64_t off);
  Table* Insert(uint64_t off, std::vector<uint8_t> data, bool dirty);
  bool Full() const { return map_.size() >= capacity_; }
  uint64_t Victim() const;  // offset of the least recently used table
  void Erase(uint64_t off) { map_.erase(off); }
  std::map<uint64_t, Table>& entries() { return map_; }

 private:
  size_t capacity_;
  uint64_t clock_ = 0;
  std::map<uint64_t, Table> map_;
};

// What an L2 entry says about one guest cluster.
enum class Kind { kUnallocated, kZero, kNormal, kCompressed };
struct Mapping {
  Kind kind;
  uint64_t host = 0;   // kNormal, kZero (if preallocated): cluster offset;
                       // kCompressed: byte offset of the compressed data
  uint64_t csize = 0;  // kCompressed: bytes of compressed data
  bool copied = false;
};

class Qcow2 final : public Qcow2Image {
 public:
  static absl::StatusOr<std::unique_ptr<Qcow2>> OpenImpl(
      File file, const OpenOptions& options, std::vector<std::string>* chain);
  ~Qcow2() override;

  uint64_t size() const override;
  Capabilities capabilities() const override;
  absl::Status ReadV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status WriteV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status Flush() override;
  absl::Status Discard(uint64_t offset, uint64_t len) override;
  absl::Status WriteZeroes(uint64_t offset, uint64_t len) override;
  absl::StatusOr<Extent> BlockStatus(uint64_t offset, uint64_t len) override;
  absl::Status Resize(uint64_t new_size) override;
  // Maps from cached L2 tables only; a mapping of this file's clusters is an
  // active I/O (BeginIo) until released, so no cluster behind it is freed.
  std::optional<DirectMapping> MapDirect(uint64_t offset, uint64_t len,
                                         bool write) override;

  Qcow2Info info() override;
  absl::StatusOr<CheckResult> Check(RepairMode mode) override;
  absl::StatusOr<std::vector<Qcow2SnapshotInfo>> ListSnapshots() override;
  absl::Status CreateSnapshot(const std::string& name) override;
  absl::Status ApplySnapshot(const std::string& id_or_name) override;
  absl::Status DeleteSnapshot(const std::string& id_or_name) override;

 private:
  // Resize below the current size: the clusters past the new end are
  // discarded (freed) first, then the header says the smaller size.
  absl::Status Shrink(uint64_t new_size);
  explicit Qcow2(File file);
  using Lock = std::unique_lock<std::mutex>;

  // --- qcow2.cc ---
  absl::Status Load(const OpenOptions& options, std::vector<std::string>* chain);
  Mapping Decode(uint64_t entry) const;
  absl::Status CheckHostCluster(uint64_t host, const char* what,
                                uint64_t where) const;
  // Aligned, inside the file, clear of the L1 and refcount tables.
  bool HostClusterValid(uint64_t host) const;
  // MapDirect's lookup of one guest cluster: nullopt where it cannot map.
  // For a write, the L2 table must be this image's alone (L1 COPIED flag).
  std::optional<Mapping> CachedMapping(uint64_t cluster, bool write);
  // The L2 table for L1 index `i`, or nullptr if none (reading).
  absl::StatusOr<Table*> GetL2(uint64_t i);
  // The L2 table for `i`, allocated or copied so it can be written.
  absl::StatusOr<Table*> GetL2ForWrite(uint64_t i);
  absl::StatusOr<Table*> LoadTable(TableCache& cache, uint64_t off, bool l2);
  absl::Status MakeRoom(TableCache& cache, bool l2);
  absl::Status WriteTable(uint64_t off, Table& t);
  uint64_t L2Get(const Table& t, uint64_t idx) const;
  void L2Set(Table& t, uint64_t idx, uint64_t v);
  absl::StatusOr<Mapping> MapCluster(uint64_t cluster);  // read-side lookup
  absl::Status ReadCluster(const Mapping& m, uint64_t guest_cluster,
                           uint64_t in_off, std::span<const iovec> out,
                           Lock& lock);
  absl::Status ReadBacking(uint64_t offset, std::span<const iovec> out);
  absl::Status ReadCompressed(const Mapping& m, std::vector<uint8_t>& out);
  absl::Status WriteRun(uint64_t offset, std::span<const iovec> iov,
                        uint64_t* consumed, Lock& lock);
  absl::Status ZeroOrDiscard(uint64_t offset, uint64_t len, bool discard);
  void FreeEntry(const Mapping& m);  // queues its clusters for release
  absl::Status FlushLocked(Lock& lock);
  absl::Status WriteRefcountMeta();
  absl::Status WriteL1();
  absl::Status WriteHeaderBytes(uint64_t off, const void* p, size_t n);
  // h_.incompatible_features to the header, durably.
  absl::Status WriteIncompatibleFeatures();
  // The header's disk size, then the caches flushed (Resize and Shrink).
  absl::Status CommitSize(uint64_t new_size, Lock& lock);
  absl::Status MarkCorrupt(const std::string& why);
  absl::Status WritableCheck() const;
  void WaitAllocs(uint64_t first, uint64_t count, Lock& lock);
  uint64_t BeginIo();
  void EndIo(uint64_t seq);

  // --- qcow2_refcount.cc ---
  uint64_t RbGet(const uint8_t* b, uint64_t i) const;
  void RbSet(uint8_t* b, uint64_t i, uint64_t v) const;
  absl::StatusOr<Table*> GetRefblock(uint64_t rbi, bool create);
  absl::StatusOr<uint64_t> GetRefcount(uint64_t cluster);
  absl::Status AddRefcount(uint64_t cluster, int64_t delta);
  absl::Status SetRefcount(uint64_t cluster, uint64_t value);
  absl::StatusOr<uint64_t> AllocateClusters(uint64_t n, bool* fresh);
  absl::StatusOr<uint64_t> AllocateAtEnd(uint64_t n);
  absl::Status GrowReftable(uint64_t min_entries);
  absl::Status EnsureFileSize(uint64_t end);
  absl::Status ApplyFrees(std::vector<std::pair<uint64_t, uint64_t>> frees,
                          Lock& lock);

  // --- qcow2_snapshot.cc ---
  absl::Status TreeRefcounts(const std::vector<uint64_t>& l1, int64_t delta);
  absl::Status FixCopiedFlags();
  absl::Status WriteSnapshotTable(std::vector<Snapshot> snaps);
  absl::StatusOr<size_t> FindSnapshot(const std::string& id_or_name) const;
  absl::StatusOr<std::vector<uint64_t>> ReadL1(uint64_t off, uint32_t n);

  File file_;
  Header h_;
  std::unique_ptr<Image> backing_;
  uint64_t backing_size_ = 0;
  uint64_t cs_ = 0;           // cluster size
  uint32_t cb_ = 0;           // cluster bits
  uint64_t l2_entries_ = 0;
  uint64_t rb_entries_ = 0;   // refcounts per refcount block
  uint64_t rc_max_ = 0;
  uint32_t csize_shift_ = 0;
  uint64_t csize_mask_ = 0;
  uint64_t coffset_mask_ = 0;
  bool writable_ = false;
  std::atomic<uint64_t> size_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint64_t> l1_;   // host byte order
  uint64_t l1_dirty_lo_ = ~0ULL, l1_dirty_hi_ = 0;  // entry range
  std::vector<uint64_t> reftable_;
  uint64_t rt_dirty_lo_ = ~0ULL, rt_dirty_hi_ = 0;
  TableCache l2_cache_{16};
  TableCache rb_cache_{16};
  std::vector<Snapshot> snapshots_;
  // (first cluster index, count) decremented once the L2/L1 change that
  // dropped them is durable.
  std::vector<std::pair<uint64_t, uint64_t>> pending_free_;
  uint64_t free_hint_ = 0;    // cluster index where allocation scans start
  uint64_t end_cluster_ = 0;  // clusters at or past this are free
  uint64_t zero_from_ = 0;    // bytes at or past this read as zeros
  uint64_t file_size_ = 0;    // as extended by us
  std::set<uint64_t> allocating_;  // guest clusters being allocated
  uint64_t io_seq_ = 0;
  std::multiset<uint64_t> active_io_;  // unlocked I/O in flight
  bool corrupt_ = false;
  bool refcount_dirty_ = false;  // refcount blocks changed since last sync
};

}  // namespace block::qcow2

#endif  // KINDLING_BLOCK_SRC_QCOW2_IMAGE_H_
