// The working set kept beside a snapshot (`working-set`, WorkingSet in
// snapshot.proto): the pages a userfaultfd restore saw the guest touch
// before its background fill got there, in that order. The next uffd
// restore loads them first (PagerOptions.prefetch), so the guest's first
// touches find their pages in place. Pages are 4 KiB pages of the memory
// file. The file is untrusted: DecodeWorkingSet bounds every number.
//
//   auto prior = ReadWorkingSet(dir, ram_pages);  // NOT_FOUND: none yet
//   ... PagerOptions{.prefetch = *prior, .fill_rest = true, .record_limit = N} ...
//   WriteWorkingSet(dir, MergeWorkingSets(pager->touched_pages(), *prior, ram_pages),
//                   ram_pages);
#ifndef MIGRATION_WORKING_SET_H_
#define MIGRATION_WORKING_SET_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace migration {

inline constexpr char kWorkingSetFile[] = "working-set";
inline constexpr size_t kMaxWorkingSetBytes = 16 << 20;

// Consecutive pages become one run.
std::string EncodeWorkingSet(std::span<const uint64_t> pages, uint64_t ram_pages);
// INVALID_ARGUMENT naming what is wrong: not a WorkingSet, another format
// version or RAM size, a run past the RAM, more pages than the RAM has.
absl::StatusOr<std::vector<uint64_t>> DecodeWorkingSet(std::string_view bytes,
                                                       uint64_t ram_pages);
// `newer`'s pages in order, then `older`'s not among them; each page once,
// pages past the RAM dropped.
std::vector<uint64_t> MergeWorkingSets(std::span<const uint64_t> newer,
                                       std::span<const uint64_t> older, uint64_t ram_pages);
// DIR/working-set; NOT_FOUND when there is none.
absl::StatusOr<std::vector<uint64_t>> ReadWorkingSet(const std::string& dir, uint64_t ram_pages);
// Replaces DIR/working-set at once (a temporary file renamed over it).
absl::Status WriteWorkingSet(const std::string& dir, std::span<const uint64_t> pages,
                             uint64_t ram_pages);

}  // namespace migration

#endif  // MIGRATION_WORKING_SET_H_
