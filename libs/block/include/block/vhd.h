// VHD ("vpc" in qemu-img): fixed, dynamic and differencing disks,
// create/read/write.
//
// Fixed: the disk's bytes, then a 512-byte footer. Dynamic: footer copy,
// dynamic header, block allocation table (BAT), blocks of a sector bitmap
// plus data, footer. New blocks are appended; their BAT entry is written
// after the block's data. Differencing (a VHD "snapshot"): a dynamic disk
// over a parent VHD, found through the header's parent locators and checked
// by its unique ID; a sector whose bitmap bit is clear reads from the parent,
// and a write sets the bits of the sectors it covers (data, then bitmap,
// then BAT entry).
//
//   RETURN_IF_ERROR(block::VhdImage::Create("base.vhd", {.size = 1 << 30}));
//   RETURN_IF_ERROR(block::VhdImage::Create("snap.vhd", {.parent = "base.vhd"}));
//   ASSIGN_OR_RETURN(auto disk, block::OpenImage("snap.vhd", {}));
#ifndef KINDLING_BLOCK_VHD_H_
#define KINDLING_BLOCK_VHD_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "block/file.h"
#include "block/image.h"

namespace block {

struct VhdCreateOptions {
  uint64_t size = 0;              // 0 with a parent: the parent's size
  bool fixed = false;
  uint32_t block_size = 2 << 20;  // dynamic disks
  // A differencing disk over this VHD: a path relative to the new image's
  // directory (stored in a relative locator) or absolute.
  std::string parent;
};

class VhdImage : public Image {
 public:
  static absl::Status Create(const std::string& path, const VhdCreateOptions& o);
  static absl::StatusOr<std::unique_ptr<VhdImage>> Open(const std::string& path,
                                                        const OpenOptions& o);
  // With `chain` (see OpenImageInChain) a differencing disk opens its parent.
  static absl::StatusOr<std::unique_ptr<VhdImage>> OpenInChain(
      const std::string& path, const OpenOptions& o, std::vector<std::string>* chain);
  // Without a chain a differencing disk is refused; with one, its parent is
  // looked for relative to `file.name()`.
  static absl::StatusOr<std::unique_ptr<VhdImage>> OpenFile(
      File file, std::vector<std::string>* chain = nullptr);

  std::string_view format() const override { return "vpc"; }
  uint64_t size() const override { return size_; }
  Capabilities capabilities() const override;
  absl::Status ReadV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status WriteV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status Flush() override;
  absl::Status Discard(uint64_t offset, uint64_t len) override;
  absl::Status WriteZeroes(uint64_t offset, uint64_t len) override;
  absl::StatusOr<Extent> BlockStatus(uint64_t offset, uint64_t len) override;
  // Blocks are never freed and bitmap bits only ever get set, so mappings
  // need no lease (a differencing block whose bitmap is not cached does not
  // map).
  std::optional<DirectMapping> MapDirect(uint64_t offset, uint64_t len,
                                         bool write) override;

  bool fixed() const { return fixed_; }
  bool differencing() const { return parent_ != nullptr; }
  // The parent as its locator named it (resolved against our directory).
  const std::string& parent_path() const { return parent_path_; }
  // The footer's unique ID (16 bytes), which a child's header names.
  std::vector<uint8_t> unique_id() const;

 private:
  explicit VhdImage(File f) : file_(std::move(f)) {}
  absl::Status Load(const OpenOptions& o, std::vector<std::string>* chain);
  absl::Status OpenParent(const uint8_t* dyn, uint64_t fsize, const OpenOptions& o,
                          std::vector<std::string>* chain);
  // Differencing disks: the block's sector bitmap (cached), under mu_.
  absl::StatusOr<const std::vector<uint8_t>*> Bitmap(uint64_t block);
  bool SectorPresent(const std::vector<uint8_t>& bitmap, uint64_t sector) const;
  // From block offset `from` up to `limit`: how many bytes are present here
  // (*here) or not, before that changes.
  uint64_t SectorRun(const std::vector<uint8_t>& bitmap, uint64_t from, uint64_t limit,
                     bool* here) const;
  // Reads [in, in + n) of allocated block `b` (at sector `e`), sector runs
  // from this file or the parent by the bitmap. Takes mu_ for the bitmap.
  absl::Status ReadDiffBlock(uint64_t b, uint32_t e, uint64_t in,
                             std::span<const iovec> out);
  // The same with the bitmap given (no lock taken).
  absl::Status ReadSectors(uint64_t b, uint32_t e, uint64_t in, std::span<const iovec> out,
                           const std::vector<uint8_t>& bitmap);
  absl::Status WriteDiff(uint64_t offset, std::span<const iovec> iov);
  // Appends a block (zero bitmap) and returns its sector; the BAT entry is
  // the caller's to write once the data is in. Requires mu_.
  absl::StatusOr<uint32_t> AppendBlock(uint64_t b, bool all_present);
  absl::Status SetBat(uint64_t b, uint32_t e);

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
  std::unique_ptr<Image> parent_;  // differencing disks
  std::string parent_path_;
  std::map<uint64_t, std::vector<uint8_t>> bitmaps_;  // by block, bounded
};

}  // namespace block

#endif  // KINDLING_BLOCK_VHD_H_
