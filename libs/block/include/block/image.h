// Image: one disk image format behind a synchronous, thread-safe interface.
//
// Every format (raw, qcow2, ...) implements Image. Calls may come from many
// threads at once; each format serialises what it must. The asynchronous
// BlockBackend (block/backend.h) runs Images on io_uring or a thread pool.
//
//   block::OpenOptions opts{.read_only = true};
//   ASSIGN_OR_RETURN(auto img, block::OpenImage("disk.qcow2", opts));
//   std::vector<char> buf(4096);
//   RETURN_IF_ERROR(img->Read(0, buf.data(), buf.size()));
#ifndef KINDLING_BLOCK_IMAGE_H_
#define KINDLING_BLOCK_IMAGE_H_

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace block {

struct Capabilities {
  bool read_only = false;
  bool discard = false;       // Discard really frees space
  bool write_zeroes = false;  // WriteZeroes is cheaper than writing zeros
  bool backing = false;       // reads of unallocated ranges fall through
};

// What a range of the image holds (for convert, map and compare).
enum class ExtentKind { kData, kZero, kUnallocated };
struct Extent {
  ExtentKind kind;
  uint64_t length;  // > 0; may be shorter than asked
};

class File;

// Where part of a disk lies on the host, for engines that do the data I/O
// themselves (io_uring). `file` == nullptr: the part reads as zeros.
struct HostExtent {
  const File* file = nullptr;
  uint64_t offset = 0;  // byte offset in `file`
  uint64_t length = 0;
};

// The answer of Image::MapDirect: extents in disk order covering the range.
// The image keeps them valid (no cluster behind them is freed or reused)
// until `release` runs; run it once the I/O is done.
struct DirectMapping {
  std::vector<HostExtent> extents;
  std::function<void()> release;

  DirectMapping() = default;
  DirectMapping(DirectMapping&&) = default;
  DirectMapping& operator=(DirectMapping&&) = default;
  ~DirectMapping() { Release(); }
  void Release() {
    if (release) std::exchange(release, nullptr)();
  }
  // Takes over `other`'s extents (after ours) and its release.
  void Append(DirectMapping&& other);
};

class Image {
 public:
  virtual ~Image() = default;

  virtual std::string_view format() const = 0;
  // Virtual disk size in bytes.
  virtual uint64_t size() const = 0;
  virtual Capabilities capabilities() const = 0;

  // Offsets and lengths are in bytes; [offset, offset + len) must lie inside
  // the disk, else OutOfRange.
  virtual absl::Status ReadV(uint64_t offset, std::span<const iovec> iov) = 0;
  virtual absl::Status WriteV(uint64_t offset, std::span<const iovec> iov) = 0;
  // Makes every write that completed before the call durable.
  virtual absl::Status Flush() = 0;
  // A hint: the range may read back as anything previously written or zeros.
  virtual absl::Status Discard(uint64_t offset, uint64_t len) = 0;
  // The range reads back as zeros.
  virtual absl::Status WriteZeroes(uint64_t offset, uint64_t len) = 0;

  // What [offset, offset + len) holds, as far as the first change of kind.
  virtual absl::StatusOr<Extent> BlockStatus(uint64_t offset, uint64_t len);
  // Grows (or, where the format allows, shrinks) the disk.
  virtual absl::Status Resize(uint64_t new_size);

  // Where [offset, offset + len) lies on the host, when every byte of it can
  // be read (write = false) or overwritten in place (write = true) without
  // the format's own code: no allocation, no copy-on-write, no compressed
  // data, no metadata to load. std::nullopt otherwise (and for an empty or
  // out-of-range request): then use ReadV/WriteV. Never blocks on I/O.
  // The default maps nothing.
  virtual std::optional<DirectMapping> MapDirect(uint64_t offset, uint64_t len,
                                                 bool write);

  absl::Status Read(uint64_t offset, void* buf, size_t len);
  absl::Status Write(uint64_t offset, const void* buf, size_t len);

 protected:
  // OutOfRange unless [offset, offset + len) is inside the disk.
  absl::Status CheckRange(uint64_t offset, uint64_t len) const;
};

struct OpenOptions {
  bool read_only = false;
  bool direct = false;       // cache=none: O_DIRECT data I/O
  std::string format;        // "raw", "qcow2", ...; empty = probe
  // Backing chains: at most this many images below the top one.
  int max_backing_depth = 16;
  // qcow2: open an image with the dirty bit set read-write (repairing its
  // refcounts first); false refuses such an image.
  bool repair_dirty = true;
  // qcow2: open an image marked corrupt read-write, for Check(kAll) alone:
  // writes stay refused until a check has repaired every corruption and
  // cleared the mark. false refuses such an image read-write.
  bool repair_corrupt = false;
  // Extra write-back cache for qcow2 metadata (bytes; 0 = default).
  uint64_t cache_size = 0;
};

// Guesses the format from the first bytes of the file: "qcow2", or "raw".
absl::StatusOr<std::string> ProbeFormat(const std::string& path);

// Opens `path` in `options.format` (probed when empty), with its backing
// chain. Formats: raw, qcow2.
absl::StatusOr<std::unique_ptr<Image>> OpenImage(const std::string& path,
                                                 const OpenOptions& options);

// Internal to backing-chain opening: `chain` holds the canonical paths of the
// images above, for loop detection.
absl::StatusOr<std::unique_ptr<Image>> OpenImageInChain(
    const std::string& path, const OpenOptions& options,
    std::vector<std::string>& chain);

// Appends `e` to `extents`, merging it into the last one when it continues
// it (same file, next offset; or both zeros).
void AppendExtent(std::vector<HostExtent>& extents, const HostExtent& e);

// For formats with a backing file (`backing`, nullptr if none, of
// `backing_size` bytes): [offset, offset + len) as the backing file holds
// it, zeros past its end. ReadBacking reads it into `out`; MapBacking appends
// its mapping to `m` (false where the backing file does not map it).
absl::Status ReadBacking(Image* backing, uint64_t backing_size, uint64_t offset,
                         std::span<const iovec> out);
bool MapBacking(Image* backing, uint64_t backing_size, uint64_t offset, uint64_t len,
                DirectMapping& m);

// Helpers over iovec arrays.
uint64_t IovLength(std::span<const iovec> iov);
// The sub-array covering [offset, offset + len) of `iov`.
std::vector<iovec> IovSlice(std::span<const iovec> iov, uint64_t offset,
                            uint64_t len);
void IovZero(std::span<const iovec> iov);
// Copies `len` bytes from `src` into the iovecs starting at `offset`.
void IovCopyIn(std::span<const iovec> iov, uint64_t offset, const void* src,
               uint64_t len);
// Copies `len` bytes at `offset` of the iovecs into `dst`.
void IovCopyOut(std::span<const iovec> iov, uint64_t offset, void* dst,
                uint64_t len);

}  // namespace block

#endif  // KINDLING_BLOCK_IMAGE_H_
