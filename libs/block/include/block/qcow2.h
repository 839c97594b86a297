// qcow2 (version 3, and version 2 images) read/write, compatible with QEMU.
//
// Cluster sizes 512 B to 2 MiB; refcounts of 1 to 64 bits; zero clusters;
// discard; compressed clusters (zlib deflate, zstd) read; backing files of
// any supported format, in chains (loops refused); internal snapshots;
// L2 and refcount-block caches written back on Flush() in an order that
// leaves a consistent image at any crash point:
//
//   data + refcount blocks  -> fdatasync -> L2 tables -> fdatasync
//   -> L1 table -> fdatasync; clusters freed by discard are released only
//   after the L2 change that dropped them is durable.
//
// A crash can leak clusters (check -r leaks reclaims them) but never leaves a
// cluster referenced with a refcount too low.
//
//   block::Qcow2CreateOptions c{.size = 1 << 30, .cluster_size = 65536};
//   RETURN_IF_ERROR(block::Qcow2Image::Create("disk.qcow2", c));
//   ASSIGN_OR_RETURN(auto disk, block::Qcow2Image::Open("disk.qcow2", {}));
//   RETURN_IF_ERROR(disk->Write(0, buf, 4096));
//   RETURN_IF_ERROR(disk->Flush());
//   ASSIGN_OR_RETURN(block::CheckResult r, disk->Check(block::RepairMode::kNone));
#ifndef KINDLING_BLOCK_QCOW2_H_
#define KINDLING_BLOCK_QCOW2_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "block/file.h"
#include "block/image.h"

namespace block {

struct Qcow2CreateOptions {
  uint64_t size = 0;
  uint64_t cluster_size = 65536;  // power of two, 512 B .. 2 MiB
  uint32_t refcount_bits = 16;    // 1, 2, 4, ..., 64
  std::string backing_file;       // stored as given (relative to the image)
  std::string backing_format;     // "" = probe on open
  bool zstd = false;              // compression type (for writers of
                                  // compressed clusters; we only read them)
};

enum class RepairMode { kNone, kLeaks, kAll };

struct CheckResult {
  uint64_t corruptions = 0;
  uint64_t leaks = 0;
  uint64_t corruptions_fixed = 0;
  uint64_t leaks_fixed = 0;
  uint64_t check_errors = 0;       // problems check cannot classify or fix
  uint64_t allocated_clusters = 0; // guest clusters with data
  uint64_t total_clusters = 0;     // guest clusters
  uint64_t compressed_clusters = 0;
  uint64_t image_end_offset = 0;
  std::vector<std::string> messages;  // one line per problem found
};

struct Qcow2SnapshotInfo {
  std::string id;
  std::string name;
  uint64_t vm_state_size = 0;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t disk_size = 0;
};

struct Qcow2Info {
  uint32_t version = 3;
  uint64_t cluster_size = 0;
  uint32_t refcount_bits = 16;
  bool zstd = false;
  bool dirty = false;
  bool corrupt = false;
  bool lazy_refcounts = false;
  std::string backing_file;
  std::string backing_format;
  std::vector<Qcow2SnapshotInfo> snapshots;
};

class Qcow2Image : public Image {
 public:
  static absl::Status Create(const std::string& path,
                             const Qcow2CreateOptions& options);
  static absl::StatusOr<std::unique_ptr<Qcow2Image>> Open(
      const std::string& path, const OpenOptions& options);
  // Opens an already-open file; backing files are not followed (fuzzers).
  static absl::StatusOr<std::unique_ptr<Qcow2Image>> OpenFile(
      File file, const OpenOptions& options);
  // For OpenImageInChain: `chain` holds the images above this one.
  static absl::StatusOr<std::unique_ptr<Qcow2Image>> OpenInChain(
      const std::string& path, const OpenOptions& options,
      std::vector<std::string>& chain);

  std::string_view format() const override { return "qcow2"; }

  virtual Qcow2Info info() = 0;
  // Walks all metadata, compares the refcounts with the references, and
  // repairs what `mode` asks (needs a writable image).
  virtual absl::StatusOr<CheckResult> Check(RepairMode mode) = 0;

  virtual absl::StatusOr<std::vector<Qcow2SnapshotInfo>> ListSnapshots() = 0;
  virtual absl::Status CreateSnapshot(const std::string& name) = 0;
  // `id_or_name` matches a snapshot's id first, then its name.
  virtual absl::Status ApplySnapshot(const std::string& id_or_name) = 0;
  virtual absl::Status DeleteSnapshot(const std::string& id_or_name) = 0;
};

}  // namespace block

#endif  // KINDLING_BLOCK_QCOW2_H_
