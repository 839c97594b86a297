// Post-copy live migration (MigrationMode::kPostcopy): the guest moves to
// the destination before all of its RAM has, and the pages it still lacks
// come on demand. See docs/design/migration.md.
//
// At the switch-over the source sends, before the state, the bitmap of
// pages the destination's copy is stale for (POSTCOPY). The destination
// discards those pages, registers its RAM with userfaultfd and runs the
// guest after GO; a fault on a missing page becomes a PAGE_REQUEST to the
// source, which meanwhile pushes every missing page in order. Once all
// have arrived (POSTCOPY_END, then DONE back) the pager retires.
//
// Destination, after ReceiveMemoryAndState returned a `postcopy` bitmap:
//   ASSIGN_OR_RETURN(auto pager, PostcopyPager::Start(ram, fd, *in.postcopy,
//                                                     timeout, on_failure));
//   ... load the state ...
//   RETURN_IF_ERROR(pager->Finish(timeout));   // DONE, then GO: run the guest
#ifndef MIGRATION_POSTCOPY_H_
#define MIGRATION_POSTCOPY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migration/stream.h"
#include "vm-memory/guest_memory.h"
#include "vm-memory/unique_fd.h"

namespace migration {

// One bit per 4 KiB page, one vector of 64-bit words per region of a
// GuestMemory, in the order of its regions().
using PageBitmap = std::vector<std::vector<uint64_t>>;

uint64_t CountPages(const PageBitmap& bits);

// A POSTCOPY frame's payload: every region's words, back to back.
std::string EncodePageBitmap(const PageBitmap& bits);
// Checks the payload against `memory`'s regions (exact length, no bit past
// a region's end).
absl::StatusOr<PageBitmap> DecodePageBitmap(std::string_view payload,
                                            const vm_memory::GuestMemory& memory);

// A PAGES frame taken apart: its guest address and whole pages.
struct PagesFrame {
  uint64_t gpa;
  std::span<const uint8_t> data;
};
absl::StatusOr<PagesFrame> ParsePagesFrame(const Frame& f);

class PostcopyPager {
 public:
  struct Stats {
    uint64_t faults = 0;         // userfaultfd faults taken
    uint64_t requests = 0;       // of them, pages asked of the source
    uint64_t pages_placed = 0;   // missing pages that arrived
    uint64_t pages_missing = 0;  // still to come
  };

  // Takes over the stream `fd` (not owned; it must outlive the pager)
  // right after END. Discards `missing`'s pages from `memory` (their
  // pre-copied contents are stale), registers every region with
  // userfaultfd and starts the thread that answers faults and places the
  // pages the source sends. FAILED_PRECONDITION where userfaultfd is not
  // available. `on_failure` is called (from the pager's thread) when the
  // stream fails after GO: the guest must not run on, since the pages it
  // lacks will never come; the vCPUs that need them stay blocked.
  static absl::StatusOr<std::unique_ptr<PostcopyPager>> Start(
      vm_memory::GuestMemory& memory, int fd, PageBitmap missing, absl::Duration peer_timeout,
      std::function<void(const absl::Status&)> on_failure);
  // After a failure the userfaultfd is kept open (a blocked fault must not
  // read zeros): end the process rather than run the guest on.
  ~PostcopyPager();
  PostcopyPager(const PostcopyPager&) = delete;
  PostcopyPager& operator=(const PostcopyPager&) = delete;

  // The state is loaded: sends DONE and waits for the source's GO.
  absl::Status Finish(absl::Duration timeout);
  // Waits until every missing page has arrived and the pager retired.
  absl::Status WaitComplete(absl::Duration timeout);
  Stats stats() const;

 private:
  struct Region {
    uint64_t host, size, gpa;
  };
  PostcopyPager(vm_memory::GuestMemory& memory, int fd, PageBitmap missing,
                absl::Duration peer_timeout, std::function<void(const absl::Status&)> on_failure);
  absl::Status Register();
  void Serve();
  absl::Status ServeOnce(bool& complete);
  absl::Status DrainFaults();
  absl::Status Fault(uint64_t host_address);
  absl::Status OnFrame(const Frame& f, bool& complete);
  absl::Status Place(const Frame& f);
  absl::Status SendFrame(FrameType type, std::span<const uint8_t> payload);
  void Unregister();
  void Fail(const absl::Status& why);

  vm_memory::GuestMemory& memory_;
  FrameStream stream_;
  absl::Mutex send_mu_;  // REQUESTs from the thread, DONE from Finish
  absl::Duration peer_timeout_;
  std::function<void(const absl::Status&)> on_failure_;
  std::vector<Region> regions_;
  vm_memory::UniqueFd uffd_, stop_;
  std::thread thread_;
  absl::Time last_frame_;  // the thread's own

  mutable absl::Mutex mu_;
  PageBitmap missing_ ABSL_GUARDED_BY(mu_);
  PageBitmap requested_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
  bool done_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool go_ ABSL_GUARDED_BY(mu_) = false;
  bool complete_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
};

// The source's part after END (called by Migrate): answers PAGE_REQUESTs
// until the destination's DONE, sends GO unless `may_go` says no (a
// cancel: CANCELLED, and the destination is told), calls `on_go` (the
// point after which the guest lives there), pushes every missing page with requested
// ones first, sends POSTCOPY_END and waits for the last DONE.
struct PostcopySourceStats {
  uint64_t requests = 0;
  uint64_t pages_sent = 0;
};
absl::Status ServePostcopy(FrameStream& s, vm_memory::GuestMemory& memory, PageBitmap missing,
                           uint64_t bandwidth_bytes_per_s, absl::Duration peer_timeout,
                           const std::function<bool()>& may_go,
                           const std::function<void()>& on_go,
                           const std::function<void(const PostcopySourceStats&)>& progress);

}  // namespace migration

#endif  // MIGRATION_POSTCOPY_H_
