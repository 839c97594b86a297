// UffdPager: guest RAM filled on first touch from a snapshot's memory file
// through userfaultfd (RestoreMode::kUffd). Every region of a fresh
// GuestMemory is registered for missing-page faults; a handler thread
// answers each fault, whoever takes it (a vCPU inside KVM, a device
// thread), with the file's page (UFFDIO_COPY) or zeros for a hole. This is
// also how a post-copy destination gets pages that are not local yet.
//
//   ASSIGN_OR_RETURN(auto pager, UffdPager::Start(*memory, std::move(file_fd)));
//   ... run the VM; keep `pager` alive as long as the RAM is in use ...
#ifndef MIGRATION_UFFD_PAGER_H_
#define MIGRATION_UFFD_PAGER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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

class UffdPager {
 public:
  // `file` holds the regions of `memory` back to back (the snapshot's
  // memory file). FAILED_PRECONDITION where userfaultfd is not available.
  static absl::StatusOr<std::unique_ptr<UffdPager>> Start(vm_memory::GuestMemory& memory,
                                                          vm_memory::UniqueFd file);
  ~UffdPager();  // stops the thread; faults after that would hang: stop the VM first
  UffdPager(const UffdPager&) = delete;
  UffdPager& operator=(const UffdPager&) = delete;

  uint64_t faults() const { return faults_.load(); }

 private:
  struct Range {
    uint64_t host;    // start of the region's mapping
    uint64_t size;
    uint64_t offset;  // in the file
  };
  UffdPager(vm_memory::UniqueFd uffd, vm_memory::UniqueFd file, vm_memory::UniqueFd stop,
            std::vector<Range> ranges);
  void Serve();
  bool Fill(uint64_t address);

  vm_memory::UniqueFd uffd_, file_, stop_;
  std::vector<Range> ranges_;
  std::atomic<uint64_t> faults_{0};
  std::thread thread_;
};

}  // namespace migration

#endif  // MIGRATION_UFFD_PAGER_H_
