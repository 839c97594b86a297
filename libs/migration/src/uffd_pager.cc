#include "migration/uffd_pager.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"

namespace migration {
namespace {

constexpr uint64_t kPage = 4096;

absl::Status Errno(int err, std::string_view what) {
  return absl::ErrnoToStatus(err, std::string(what));
}

}  // namespace

absl::StatusOr<vm_memory::UniqueFd> RegisterMissingFaults(const vm_memory::GuestMemory& memory,
                                                          absl::string_view purpose) {
  // Not UFFD_USER_MODE_ONLY: KVM's own accesses to guest RAM must fault too.
  vm_memory::UniqueFd uffd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
  if (!uffd.valid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        purpose, " needs userfaultfd, which is not available here (", std::strerror(errno),
        "; vm.unprivileged_userfaultfd or the process's privileges)"));
  }
  uffdio_api api = {};
  api.api = UFFD_API;
  if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0) return Errno(errno, "UFFDIO_API");
  for (const vm_memory::GuestRegion* r : memory.regions()) {
    if (r->page_size() != kPage) {
      return absl::InvalidArgumentError(
          absl::StrCat(purpose, " needs guest RAM of 4 KiB pages (no hugepages)"));
    }
    if (!r->private_file() && !(api.features & UFFD_FEATURE_MISSING_SHMEM)) {
      return absl::FailedPreconditionError(absl::StrCat(
          purpose, ": this kernel's userfaultfd does not handle shared memory (memfd) faults"));
    }
    uffdio_register reg = {};
    reg.range.start = r->host_address().value;
    reg.range.len = r->size();
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(uffd.get(), UFFDIO_REGISTER, &reg) != 0) {
      return Errno(errno, "UFFDIO_REGISTER of guest RAM");
    }
  }
  return uffd;
}

absl::StatusOr<std::unique_ptr<UffdPager>> UffdPager::Start(vm_memory::GuestMemory& memory,
                                                             vm_memory::UniqueFd file) {
  ASSIGN_OR_RETURN(vm_memory::UniqueFd uffd,
                   RegisterMissingFaults(memory, "a userfaultfd restore"));
  std::vector<Range> ranges;
  uint64_t offset = 0;
  for (const vm_memory::GuestRegion* r : memory.regions()) {
    ranges.push_back({r->host_address().value, r->size(), offset});
    offset += r->size();
  }
  vm_memory::UniqueFd stop(::eventfd(0, EFD_CLOEXEC));
  if (!stop.valid()) return Errno(errno, "eventfd");
  std::unique_ptr<UffdPager> p(
      new UffdPager(std::move(uffd), std::move(file), std::move(stop), std::move(ranges)));
  p->thread_ = std::thread([raw = p.get()] { raw->Serve(); });
  return p;
}

UffdPager::UffdPager(vm_memory::UniqueFd uffd, vm_memory::UniqueFd file,
                     vm_memory::UniqueFd stop, std::vector<Range> ranges)
    : uffd_(std::move(uffd)), file_(std::move(file)), stop_(std::move(stop)),
      ranges_(std::move(ranges)) {}

UffdPager::~UffdPager() {
  uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

void UffdPager::Serve() {
  for (;;) {
    pollfd p[2] = {{uffd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    uffd_msg msg;
    ssize_t n = ::read(uffd_.get(), &msg, sizeof msg);
    if (n != sizeof msg) continue;  // EAGAIN: another wakeup took it
    if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
    if (!Fill(msg.arg.pagefault.address & ~(kPage - 1))) {
      std::fprintf(stderr, "kindling: userfaultfd: cannot fill the page at host %#llx\n",
                   static_cast<unsigned long long>(msg.arg.pagefault.address));
    }
  }
}

// Copies the file's page for `address` into place (zeros past the file's
// data). EEXIST: another fault filled it meanwhile.
bool UffdPager::Fill(uint64_t address) {
  for (const Range& r : ranges_) {
    if (address < r.host || address >= r.host + r.size) continue;
    alignas(kPage) static thread_local uint8_t page[kPage];
    ssize_t got = ::pread(file_.get(), page, kPage, r.offset + (address - r.host));
    if (got < 0) return false;
    if (got < static_cast<ssize_t>(kPage)) std::memset(page + got, 0, kPage - got);
    uffdio_copy copy = {};
    copy.dst = address;
    copy.src = reinterpret_cast<uint64_t>(page);
    copy.len = kPage;
    faults_.fetch_add(1);
    if (::ioctl(uffd_.get(), UFFDIO_COPY, &copy) == 0 || errno == EEXIST) return true;
    return false;
  }
  return false;
}

}  // namespace migration
