// QED: read and write, with backing files of any supported format.
//
// Two-level tables (L1 -> L2 -> data clusters), little-endian, no refcounts:
// new clusters are appended at the end of the file, their data is written
// before the table entry that points at them, and a new L2 table is written
// whole before its L1 entry. The header's need-check bit is set while
// allocations are unflushed; an image opened read-write with it set is
// checked first (table entries outside the file are dropped), as QEMU does.
//
//   RETURN_IF_ERROR(block::QedImage::Create("disk.qed", {.size = 1 << 30}));
//   ASSIGN_OR_RETURN(auto disk, block::OpenImage("disk.qed", {}));
#ifndef KINDLING_BLOCK_QED_H_
#define KINDLING_BLOCK_QED_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "block/file.h"
#include "block/image.h"

namespace block {

struct QedCreateOptions {
  uint64_t size = 0;
  uint32_t cluster_size = 65536;  // power of two, 4 KiB .. 64 MiB
  uint32_t table_size = 4;        // clusters per table, 1 .. 16
  std::string backing_file;
  std::string backing_format;     // "raw" sets the no-probe feature
};

struct QedCheckResult {
  uint64_t corruptions = 0;  // table entries outside the file or unaligned
  uint64_t leaks = 0;        // clusters nothing points at
  uint64_t fixed = 0;
};

class QedImage : public Image {
 public:
  static absl::Status Create(const std::string& path, const QedCreateOptions& o);
  static absl::StatusOr<std::unique_ptr<QedImage>> OpenInChain(
      const std::string& path, const OpenOptions& o, std::vector<std::string>* chain);
  static absl::StatusOr<std::unique_ptr<QedImage>> OpenFile(File file, const OpenOptions& o);
  ~QedImage() override;

  std::string_view format() const override { return "qed"; }
  uint64_t size() const override { return size_; }
  Capabilities capabilities() const override;
  absl::Status ReadV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status WriteV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status Flush() override;
  absl::Status Discard(uint64_t offset, uint64_t len) override;
  absl::Status WriteZeroes(uint64_t offset, uint64_t len) override;
  absl::StatusOr<Extent> BlockStatus(uint64_t offset, uint64_t len) override;
  // Clusters are never freed once allocated, so mappings need no lease
  // (beyond the backing file's, which is read-only).
  std::optional<DirectMapping> MapDirect(uint64_t offset, uint64_t len,
                                         bool write) override;

  // Finds table entries outside the file (dropping them if `repair`).
  absl::StatusOr<QedCheckResult> Check(bool repair);

 private:
  explicit QedImage(File f) : file_(std::move(f)) {}
  absl::Status Load(const OpenOptions& o, std::vector<std::string>* chain);
  absl::StatusOr<std::vector<uint64_t>*> GetL2(uint64_t l1i, bool create);
  absl::StatusOr<uint64_t> Lookup(uint64_t cluster);  // 0 none, 1 zero
  absl::Status SetEntry(uint64_t cluster, uint64_t value);
  absl::Status SetNeedCheck(bool on);
  absl::Status ReadBacking(uint64_t offset, std::span<const iovec> out);
  absl::Status WriteTable(uint64_t off, const std::vector<uint64_t>& t);

  File file_;
  std::unique_ptr<Image> backing_;
  uint64_t size_ = 0;
  uint64_t cs_ = 0;
  uint64_t table_bytes_ = 0;
  uint64_t entries_ = 0;  // per table
  uint64_t l1_offset_ = 0;
  uint64_t header_clusters_ = 1;
  uint64_t features_ = 0;
  uint64_t file_end_ = 0;  // next allocation
  std::mutex mu_;
  std::vector<uint64_t> l1_;
  std::map<uint64_t, std::vector<uint64_t>> l2_;  // by file offset
  bool need_check_on_ = false;
};

}  // namespace block

#endif  // KINDLING_BLOCK_QED_H_
