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

}  // namespace migration

#endif  // MIGRATION_MEMORY_FILE_H_
