// A snapshot directory: `state.pb` (a kindling.migration.v1.Snapshot) and
// `memory` (see memory_file.h). Writing is atomic per directory entry
// (temporary names, fsync, rename); reading validates everything before
// the caller sees it.
//
//   v1::Snapshot s;                       // machine, vcpus, clock, devices
//   RETURN_IF_ERROR(WriteSnapshot("/snap", s, vm_memory));
//   ASSIGN_OR_RETURN(v1::Snapshot back, ReadSnapshot("/snap"));
//   RETURN_IF_ERROR(LoadSnapshotMemory("/snap", back, new_vm_memory));
#ifndef MIGRATION_SNAPSHOT_H_
#define MIGRATION_SNAPSHOT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "migration/memory_file.h"
#include "migration/snapshot.pb.h"
#include "migration/uffd_pager.h"
#include "vm-memory/guest_memory.h"

namespace migration {

namespace v1 = ::kindling::migration::v1;

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint64_t kMaxStateBytes = 16 << 20;
inline constexpr uint32_t kMaxVcpus = 255;
inline constexpr int kMaxRegions = 64;
inline constexpr uint64_t kMaxMemoryBytes = 1ULL << 40;

// Bounds every count, size and version in `s` (not the KVM structures'
// contents, which the decoders and KVM check).
absl::Status ValidateSnapshot(const v1::Snapshot& s);
// The same without the memory manifest (a migration's state, whose RAM
// came over the stream), and just the machine's shape (vCPUs, regions).
absl::Status ValidateState(const v1::Snapshot& s);
absl::Status ValidateMachine(const v1::Machine& m);
// Parses and validates a state file's bytes.
absl::StatusOr<v1::Snapshot> ParseSnapshot(std::string_view bytes);

// Fills in s.machine().regions and s.memory from `memory`, then writes
// dir/memory and dir/state.pb (dir is created if missing). Each file is
// written under a temporary name and renamed over the old one, so a VM
// still mapping an earlier snapshot's memory file keeps its pages.
absl::Status WriteSnapshot(const std::string& dir, v1::Snapshot s,
                           const vm_memory::GuestMemory& memory);
// Reads and validates dir/state.pb and checks dir/memory's size.
absl::StatusOr<v1::Snapshot> ReadSnapshot(const std::string& dir);

// 16 random bytes for Snapshot.snapshot_id (WriteSnapshot sets one if the
// caller did not).
std::string NewSnapshotId();

// How many diff snapshots may stand on one full snapshot.
inline constexpr int kMaxDiffChain = 16;

// A diff snapshot: as WriteSnapshot, but dir/memory holds only the pages
// set in `dirty` (the pages written since `base` was taken, per region of
// `memory`), and the state names `base` (an absolute directory and its
// snapshot id). `dir` must not be the base's own directory.
absl::Status WriteDiffSnapshot(const std::string& dir, v1::Snapshot s,
                               const vm_memory::GuestMemory& memory, const PageBitmaps& dirty,
                               const v1::DiffBase& base);

// A snapshot and the bases it stands on, the full snapshot first and
// `dir`'s own last; each base read, validated and checked against the id
// and machine its diff expects.
struct ChainLink {
  std::string dir;
  v1::Snapshot snapshot;
};
absl::StatusOr<std::vector<ChainLink>> ReadSnapshotChain(const std::string& dir);
// Eager restore of dir/memory into `memory` (same layout as s.machine()).
absl::Status LoadSnapshotMemory(const std::string& dir, const v1::Snapshot& s,
                                vm_memory::GuestMemory& memory);
// Lazy restore: guest RAM that maps dir/memory privately (pages load on
// first touch; clones of one snapshot share its page cache). Chunk
// checksums are not read: that would touch every page. Guest RAM is the
// guest's own data, so a corrupt page harms only the guest.
absl::StatusOr<std::unique_ptr<vm_memory::GuestMemory>> MapSnapshotMemory(
    const std::string& dir, const v1::Snapshot& s);

// Whether two machines have the same RAM regions (addresses and sizes).
bool SameRegionLayout(const v1::Machine& a, const v1::Machine& b);

// The RAM layout a snapshot's machine had.
std::vector<vm_memory::RegionSpec> RegionLayout(const v1::Machine& m);

enum class RestoreMode {
  kEager,  // new RAM, the memory file read into it, checksums checked
  kLazy,   // the memory file mapped privately (MapSnapshotMemory)
  kUffd,   // new RAM whose pages a userfaultfd handler fills on first touch:
           // the working set first (working_set.h), then the rest of the
           // file's data in the background (then it retires and records the
           // pages the guest touched first as the next working set)
};
absl::StatusOr<RestoreMode> ParseRestoreMode(std::string_view name);
struct RestoredMemory {
  std::unique_ptr<vm_memory::GuestMemory> memory;
  // kUffd: serves the pages; keep it alive as long as the RAM is in use
  // (destroy it after the vCPUs and devices stopped). Null otherwise.
  std::unique_ptr<UffdPager> pager;
  // kUffd: why the snapshot's working-set file was not used (OK when it
  // was, or when there is none); the restore goes on without it.
  absl::Status working_set;
};
// Guest RAM for a restored VM, by `mode`. Hugepages (options) need kEager.
// A diff snapshot's RAM is its chain's (ReadSnapshotChain) applied in
// order, eager or lazy (the full snapshot's file mapped, the diffs read
// over it); kUffd is refused for it.
absl::StatusOr<RestoredMemory> RestoreMemory(
    const std::string& dir, const v1::Snapshot& s, RestoreMode mode,
    const vm_memory::MemoryOptions& options);

}  // namespace migration

#endif  // MIGRATION_SNAPSHOT_H_
