// The snapshot memory file: guest RAM region after region in one sparse
// file, zero pages as holes, with a CRC-32 per chunk in a MemoryManifest.
//
//   ASSIGN_OR_RETURN(v1::MemoryManifest m, WriteMemoryFile(mem, fd));
//   ... later, into a freshly created GuestMemory of the same layout ...
//   RETURN_IF_ERROR(LoadMemoryFile(fd, m, new_mem));
//
// The VM must be paused while its memory is written.
#ifndef MIGRATION_MEMORY_FILE_H_
#define MIGRATION_MEMORY_FILE_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "migration/snapshot.pb.h"
#include "vm-memory/guest_memory.h"

namespace migration {

namespace v1 = ::kindling::migration::v1;

inline constexpr uint32_t kDefaultChunkSize = 2 << 20;

// The data ranges [begin, end) of `fd` within [0, size), per
// SEEK_DATA/SEEK_HOLE (a file system without them reports one range: the
// whole file).
absl::StatusOr<std::vector<std::pair<uint64_t, uint64_t>>> DataRanges(int fd, uint64_t size);

// Writes every region of `memory` into `fd` (truncated first) and returns
// the manifest with the chunk checksums.
absl::StatusOr<v1::MemoryManifest> WriteMemoryFile(
    const vm_memory::GuestMemory& memory, int fd,
    uint32_t chunk_size = kDefaultChunkSize);

// Copies the file into `memory` (whose layout must add up to the manifest's
// file size), reading only the file's data extents; holes become zeros.
// Each chunk's CRC-32 is checked; a mismatch names the chunk and its guest
// address range.
absl::Status LoadMemoryFile(int fd, const v1::MemoryManifest& manifest,
                            vm_memory::GuestMemory& memory);

// Dirty bits per region of a GuestMemory, in regions() order: one bit per
// 4 KiB page (bit i of word w is page 64 * w + i of the region).
using PageBitmaps = std::vector<std::vector<uint64_t>>;

// The most ranges a diff's manifest may list (MemoryManifest.present).
inline constexpr int kMaxPresentRanges = 1 << 20;

// A diff memory file: as WriteMemoryFile, but only the pages set in
// `dirty` are written (zero ones stay holes) and listed, merged into
// ranges, in the manifest's `present`.
absl::StatusOr<v1::MemoryManifest> WriteDiffMemoryFile(
    const vm_memory::GuestMemory& memory, int fd, const PageBitmaps& dirty,
    uint32_t chunk_size = kDefaultChunkSize);

// Copies a diff file's present ranges over `memory` (which holds its base's
// RAM), holes as zeros, and checks every chunk's CRC-32. The manifest's
// ranges are checked first (sorted, page-aligned, inside the file).
absl::Status ApplyDiffMemoryFile(int fd, const v1::MemoryManifest& manifest,
                                 vm_memory::GuestMemory& memory);

// Checks a manifest's `present` ranges against a file of `file_size` bytes.
absl::Status ValidatePresentRanges(const v1::MemoryManifest& manifest, uint64_t file_size);

}  // namespace migration

#endif  // MIGRATION_MEMORY_FILE_H_
