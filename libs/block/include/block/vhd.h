// VHD ("vpc" in qemu-img): fixed and dynamic disks, create/read/write.
//
// Fixed: the disk's bytes, then a 512-byte footer. Dynamic: footer copy,
// dynamic header, block allocation table (BAT), blocks of a sector bitmap
// plus data, footer. New blocks are appended; their BAT entry is written
// after the block's data. Differencing disks (type 4) are refused.
//
//   RETURN_IF_ERROR(block::VhdImage::Create("disk.vhd", {.size = 1 << 30}));
//   ASSIGN_OR_RETURN(auto disk, block::VhdImage::Open("disk.vhd", {}));
#ifndef KINDLING_BLOCK_VHD_H_
#define KINDLING_BLOCK_VHD_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "block/file.h"
#include "block/image.h"

namespace block {

struct VhdCreateOptions {
  uint64_t size = 0;
  bool fixed = false;
  uint32_t block_size = 2 << 20;  // dynamic disks
};

class VhdImage : public Image {
 public:
  static absl::Status Create(const std::string& path, const VhdCreateOptions& o);
  static absl::StatusOr<std::unique_ptr<VhdImage>> Open(const std::string& path,
                                                        const OpenOptions& o);
  static absl::StatusOr<std::unique_ptr<VhdImage>> OpenFile(File file);

  std::string_view format() const override { return "vpc"; }
  uint64_t size() const override { return size_; }
  Capabilities capabilities() const override;
  absl::Status ReadV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status WriteV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status Flush() override;
  absl::Status Discard(uint64_t offset, uint64_t len) override;
  absl::Status WriteZeroes(uint64_t offset, uint64_t len) override;
  absl::StatusOr<Extent> BlockStatus(uint64_t offset, uint64_t len) override;
  // Blocks are never freed once allocated, so mappings need no lease.
  std::optional<DirectMapping> MapDirect(uint64_t offset, uint64_t len,
                                         bool write) override;

  bool fixed() const { return fixed_; }

 private:
  explicit VhdImage(File f) : file_(std::move(f)) {}
  absl::Status Load();

  File file_;
  bool fixed_ = false;
  uint64_t size_ = 0;
  uint64_t block_size_ = 0;
  uint64_t bitmap_size_ = 0;  // bytes, a multiple of 512
  uint64_t bat_offset_ = 0;
  std::vector<uint8_t> footer_;
  std::mutex mu_;
  std::vector<uint32_t> bat_;  // sector offsets; 0xffffffff = none
  uint64_t footer_pos_ = 0;    // where the trailing footer lives
};

}  // namespace block

#endif  // KINDLING_BLOCK_VHD_H_
