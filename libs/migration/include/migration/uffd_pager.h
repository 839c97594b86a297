// UffdPager: guest RAM filled on first touch from a snapshot's memory file
// through userfaultfd (RestoreMode::kUffd). Every region of a fresh
// GuestMemory is registered for missing-page faults; a handler thread
// answers each fault, whoever takes it (a vCPU inside KVM, a device
// thread), with the file's page (UFFDIO_COPY) or zeros for a hole. This is
// also how a post-copy destination gets pages that are not local yet.
//
// Against the fault tail (a fault per page the restored guest touches):
// PagerOptions can name pages to load first (the working set an earlier
// restore recorded with `record_limit`), and have the thread load the
// rest of the file's data in the background, answering faults between
// chunks; once every data page is in it unregisters the RAM (the file's
// holes are zero pages, which memfd RAM reads as zeros anyway) and ends.
//
//   ASSIGN_OR_RETURN(auto pager, UffdPager::Start(*memory, std::move(file_fd),
//                                                 {.prefetch = ws, .fill_rest = true}));
//   ... run the VM; keep `pager` alive as long as the RAM is in use ...
#ifndef MIGRATION_UFFD_PAGER_H_
#define MIGRATION_UFFD_PAGER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "vm-memory/guest_memory.h"
#include "vm-memory/unique_fd.h"

namespace migration {

// A userfaultfd with every region of `memory` registered for missing-page
// faults (kernel-mode ones too: KVM's accesses to guest RAM must fault).
// `purpose` names the user in errors ("post-copy"). FAILED_PRECONDITION
// where userfaultfd, or its shared-memory support, is not available;
// INVALID_ARGUMENT for RAM not in 4 KiB pages.
absl::StatusOr<vm_memory::UniqueFd> RegisterMissingFaults(const vm_memory::GuestMemory& memory,
                                                          absl::string_view purpose);

// Pages are 4 KiB pages of the memory file: guest RAM's regions back to
// back, page N at file offset N * 4096.
struct PagerOptions {
  // Loaded first, in this order, before any other page but those faults
  // ask for. Pages past the file's end or in its holes are skipped.
  std::vector<uint64_t> prefetch;
  // Then every other data page of the file, in file order, in chunks of
  // 64 pages with faults answered between them; then the pager retires.
  bool fill_rest = false;
  // Keeps the first this many pages that faulted (the guest's first
  // touches of pages not loaded yet), in order: touched_pages().
  uint64_t record_limit = 0;
  // Called on the pager's thread once it retired, with touched_pages()
  // (to keep them as the next restore's working set: working_set.h).
  std::function<void(std::vector<uint64_t> touched)> on_retired;
};

class UffdPager {
 public:
  // `file` holds the regions of `memory` back to back (the snapshot's
  // memory file). FAILED_PRECONDITION where userfaultfd is not available.
  static absl::StatusOr<std::unique_ptr<UffdPager>> Start(vm_memory::GuestMemory& memory,
                                                          vm_memory::UniqueFd file,
                                                          PagerOptions options = {});
  ~UffdPager();  // stops the thread; faults after that would hang: stop the VM first
  UffdPager(const UffdPager&) = delete;
  UffdPager& operator=(const UffdPager&) = delete;

  uint64_t faults() const { return faults_.load(); }
  uint64_t prefetched() const { return prefetched_.load(); }  // pages placed from `prefetch`
  uint64_t filled() const { return filled_.load(); }          // pages placed by the fill
  // Every data page is in and the RAM unregistered: no fault comes again.
  bool retired() const { return retired_.load(); }
  // Waits up to `timeout` for retired(); false if it did not happen.
  bool WaitRetired(absl::Duration timeout) const;
  // The pages recorded under `record_limit`, in fault order.
  std::vector<uint64_t> touched_pages() const;

 private:
  struct Range {
    uint64_t host;    // start of the region's mapping
    uint64_t size;
    uint64_t offset;  // in the file
  };
  UffdPager(vm_memory::UniqueFd uffd, vm_memory::UniqueFd file, vm_memory::UniqueFd stop,
            std::vector<Range> ranges, PagerOptions options);
  void Serve();
  bool AnswerFaults();   // false: stop asked for
  bool Fill(uint64_t address, uint64_t page);
  bool WorkStep();       // one chunk of prefetch or fill; false when none is left
  bool PrefetchStep();
  bool FillStep();
  bool IsData(uint64_t page) const;
  uint64_t Place(uint64_t first_page, uint64_t count);  // pages newly placed
  bool ReadAhead(uint8_t* buf, uint64_t first_page, uint64_t count);
  uint64_t CopyRun(const Range& r, uint64_t page, uint64_t stop, const uint8_t* src);
  bool Retire();
  const Range* RangeOfPage(uint64_t page) const;
  void Record(uint64_t page);
  std::optional<uint64_t> FilePage(uint64_t address) const;

  vm_memory::UniqueFd uffd_, file_, stop_;
  std::vector<Range> ranges_;
  PagerOptions options_;
  std::vector<bool> present_;         // by file page: placed here or found placed
  std::vector<std::pair<uint64_t, uint64_t>> extents_;  // data pages [first, end) to fill
  size_t prefetch_next_ = 0, extent_next_ = 0;
  uint64_t extent_page_ = 0;
  bool incomplete_ = false;           // a page the fill could not place: never retire
  std::atomic<uint64_t> faults_{0}, prefetched_{0}, filled_{0};
  std::atomic<bool> retired_{false};
  mutable absl::Mutex mu_;
  std::vector<uint64_t> touched_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace migration

#endif  // MIGRATION_UFFD_PAGER_H_
