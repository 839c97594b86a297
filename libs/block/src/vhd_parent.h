// VHD differencing disks: the parent fields of the dynamic header (unique
// ID, time stamp, Unicode name, parent locators) — encoding them for a new
// child and finding the parent file they name. Internal to libs/block.
#ifndef KINDLING_BLOCK_SRC_VHD_PARENT_H_
#define KINDLING_BLOCK_SRC_VHD_PARENT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "block/file.h"

namespace block::vhd {

// Dynamic header offsets (VHD spec, "Dynamic Disk Header Format").
inline constexpr size_t kParentUniqueId = 40;    // 16 bytes
inline constexpr size_t kParentTimeStamp = 56;   // seconds since 2000-01-01
inline constexpr size_t kParentName = 64;        // 512 bytes, UTF-16 BE
inline constexpr size_t kParentLocators = 576;   // 8 entries of 24 bytes
inline constexpr int kLocatorCount = 8;
inline constexpr size_t kFooterUniqueId = 68;    // in the footer, 16 bytes
inline constexpr uint32_t kMaxLocatorBytes = 64 << 10;

// UTF-8 <-> UTF-16 (through iconv). Decoding stops at the first NUL.
absl::StatusOr<std::vector<uint8_t>> ToUtf16(std::string_view utf8, bool big_endian);
absl::StatusOr<std::string> FromUtf16(const uint8_t* p, size_t n, bool big_endian);

struct NewParent {
  std::vector<uint8_t> unique_id;  // the parent footer's, 16 bytes
  uint32_t time_stamp = 0;         // the parent file's mtime, VHD epoch
  std::string stored;              // as the user named it
  std::string absolute;            // resolved, for the MacX locator
};

// Fills the parent fields of the 1024-byte dynamic header `dyn` (not its
// checksum) for locator data placed at file offset `at` (512-aligned), and
// returns that data: a relative Windows path (W2ru) and a file URL (MacX).
absl::StatusOr<std::vector<uint8_t>> EncodeParent(uint8_t* dyn, const NewParent& p,
                                                  uint64_t at);

// The paths the header `dyn` of `child` names for its parent, best first:
// the relative locator, the file URL, the absolute Windows locator, the
// Unicode name; relative ones against the child's directory. DataLoss
// naming the field when a locator points outside the file.
absl::StatusOr<std::vector<std::string>> ParentCandidates(const File& child, uint64_t fsize,
                                                          const uint8_t* dyn);

}  // namespace block::vhd

#endif  // KINDLING_BLOCK_SRC_VHD_PARENT_H_
