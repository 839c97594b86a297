// raw: the disk is the file, byte for byte. Sparse: discard punches holes
// and write-zeroes uses FALLOC_FL_ZERO_RANGE; BlockStatus reports holes.
//
//   RETURN_IF_ERROR(block::RawImage::Create("disk.img", 1 << 30));
//   ASSIGN_OR_RETURN(auto disk, block::RawImage::Open("disk.img", {}));
//   RETURN_IF_ERROR(disk->Discard(0, 1 << 20));   // frees the blocks
#ifndef KINDLING_BLOCK_RAW_H_
#define KINDLING_BLOCK_RAW_H_

#include <atomic>
#include <memory>
#include <string>

#include "block/file.h"
#include "block/image.h"

namespace block {

class RawImage : public Image {
 public:
  // A sparse file of `size` bytes (replacing any file at `path`).
  static absl::Status Create(const std::string& path, uint64_t size);
  static absl::StatusOr<std::unique_ptr<RawImage>> Open(
      const std::string& path, const OpenOptions& options);

  std::string_view format() const override { return "raw"; }
  uint64_t size() const override { return size_; }
  Capabilities capabilities() const override;
  absl::Status ReadV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status WriteV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status Flush() override;
  absl::Status Discard(uint64_t offset, uint64_t len) override;
  absl::Status WriteZeroes(uint64_t offset, uint64_t len) override;
  absl::StatusOr<Extent> BlockStatus(uint64_t offset, uint64_t len) override;
  absl::Status Resize(uint64_t new_size) override;
  std::optional<DirectMapping> MapDirect(uint64_t offset, uint64_t len,
                                         bool write) override;

  const File& file() const { return file_; }

 private:
  RawImage(File file, uint64_t size) : file_(std::move(file)), size_(size) {}
  File file_;
  std::atomic<uint64_t> size_;
};

}  // namespace block

#endif  // KINDLING_BLOCK_RAW_H_
