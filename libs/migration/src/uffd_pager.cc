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
#include <algorithm>
#include <iterator>
#include <optional>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"

namespace migration {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kChunkPages = 64;  // 256 KiB: faults wait at most one chunk

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

namespace {

// The file's data as [first, end) page ranges (SEEK_DATA/SEEK_HOLE), up to
// `pages`; one range of everything where the file system cannot say.
std::vector<std::pair<uint64_t, uint64_t>> DataExtents(int fd, uint64_t pages) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  const off_t end = static_cast<off_t>(pages * kPage);
  off_t pos = 0;
  while (pos < end) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno != ENXIO && pos == 0) out.push_back({0, pages});  // no SEEK_DATA here
      break;
    }
    if (data >= end) break;
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0 || hole > end) hole = end;
    out.push_back({static_cast<uint64_t>(data) / kPage,
                   (static_cast<uint64_t>(hole) + kPage - 1) / kPage});
    pos = hole;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UffdPager>> UffdPager::Start(vm_memory::GuestMemory& memory,
                                                             vm_memory::UniqueFd file,
                                                             PagerOptions options) {
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
  std::unique_ptr<UffdPager> p(new UffdPager(std::move(uffd), std::move(file), std::move(stop),
                                             std::move(ranges), std::move(options)));
  p->present_.assign(offset / kPage, false);
  p->extents_ = DataExtents(p->file_.get(), offset / kPage);
  p->thread_ = std::thread([raw = p.get()] { raw->Serve(); });
  return p;
}

UffdPager::UffdPager(vm_memory::UniqueFd uffd, vm_memory::UniqueFd file,
                     vm_memory::UniqueFd stop, std::vector<Range> ranges, PagerOptions options)
    : uffd_(std::move(uffd)), file_(std::move(file)), stop_(std::move(stop)),
      ranges_(std::move(ranges)), options_(std::move(options)) {}

UffdPager::~UffdPager() {
  uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

bool UffdPager::WaitRetired(absl::Duration timeout) const {
  absl::Time deadline = absl::Now() + timeout;
  while (!retired_.load()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

std::vector<uint64_t> UffdPager::touched_pages() const {
  absl::MutexLock l(&mu_);
  return touched_;
}

// Faults first, always; between them the prefetch and the fill, a chunk
// at a time; once the fill is done, retire.
void UffdPager::Serve() {
  bool work = true;
  for (;;) {
    pollfd p[2] = {{uffd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(p, 2, work ? 0 : -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    if (p[0].revents) {
      AnswerFaults();
      continue;
    }
    if (work && !WorkStep()) {
      work = false;
      if (options_.fill_rest && !incomplete_ && Retire()) {
        if (options_.on_retired) options_.on_retired(touched_pages());
        return;
      }
    }
  }
}

// Every fault queued now (the userfaultfd is non-blocking).
bool UffdPager::AnswerFaults() {
  for (;;) {
    uffd_msg msg;
    ssize_t n = ::read(uffd_.get(), &msg, sizeof msg);
    if (n != sizeof msg) return true;  // EAGAIN: none left
    if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
    uint64_t address = msg.arg.pagefault.address & ~(kPage - 1);
    std::optional<uint64_t> page = FilePage(address);
    if (page) Record(*page);
    if (!page || !Fill(address, *page)) {
      std::fprintf(stderr, "kindling: userfaultfd: cannot fill the page at host %#llx\n",
                   static_cast<unsigned long long>(msg.arg.pagefault.address));
    }
  }
}

const UffdPager::Range* UffdPager::RangeOfPage(uint64_t page) const {
  for (const Range& r : ranges_) {
    if (page * kPage >= r.offset && page * kPage < r.offset + r.size) return &r;
  }
  return nullptr;
}

// The memory-file page of a host address in guest RAM, if it is one.
std::optional<uint64_t> UffdPager::FilePage(uint64_t address) const {
  for (const Range& r : ranges_) {
    if (address >= r.host && address < r.host + r.size) {
      return (r.offset + (address - r.host)) / kPage;
    }
  }
  return std::nullopt;
}

void UffdPager::Record(uint64_t page) {
  if (options_.record_limit == 0) return;
  absl::MutexLock l(&mu_);
  if (touched_.size() < options_.record_limit) touched_.push_back(page);
}

// Copies file page `page` to `address`, where it belongs (zeros past the
// file's data). EEXIST: another fault filled it meanwhile.
bool UffdPager::Fill(uint64_t address, uint64_t page) {
  alignas(kPage) static thread_local uint8_t bytes[kPage];
  ssize_t got = ::pread(file_.get(), bytes, kPage, page * kPage);
  if (got < 0) return false;
  if (got < static_cast<ssize_t>(kPage)) std::memset(bytes + got, 0, kPage - got);
  uffdio_copy copy = {};
  copy.dst = address;
  copy.src = reinterpret_cast<uint64_t>(bytes);
  copy.len = kPage;
  faults_.fetch_add(1);
  if (::ioctl(uffd_.get(), UFFDIO_COPY, &copy) != 0 && errno != EEXIST) return false;
  present_[page] = true;
  return true;
}

// One chunk: the next run of prefetch pages, else the next 64 pages of
// the fill. False when nothing is left.
bool UffdPager::WorkStep() { return PrefetchStep() || (options_.fill_rest && FillStep()); }

bool UffdPager::IsData(uint64_t page) const {  // extents_ are sorted and disjoint
  auto it = std::upper_bound(extents_.begin(), extents_.end(), page,
                             [](uint64_t p, const auto& x) { return p < x.first; });
  return it != extents_.begin() && page < std::prev(it)->second;
}

// The next prefetch page that is data and not in yet, with the ones that
// follow it in the list consecutively (up to a chunk).
bool UffdPager::PrefetchStep() {
  const std::vector<uint64_t>& pf = options_.prefetch;
  while (prefetch_next_ < pf.size()) {
    uint64_t first = pf[prefetch_next_++];
    if (first >= present_.size() || present_[first] || !IsData(first)) continue;
    uint64_t n = 1;
    while (n < kChunkPages && prefetch_next_ < pf.size() && pf[prefetch_next_] == first + n &&
           first + n < present_.size()) {
      ++n;
      ++prefetch_next_;
    }
    prefetched_.fetch_add(Place(first, n));
    return true;
  }
  return false;
}

bool UffdPager::FillStep() {
  while (extent_next_ < extents_.size()) {
    auto [b, e] = extents_[extent_next_];
    extent_page_ = std::max(extent_page_, b);
    if (extent_page_ >= e) {
      ++extent_next_;
      continue;
    }
    uint64_t n = std::min<uint64_t>(kChunkPages, e - extent_page_);
    filled_.fetch_add(Place(extent_page_, n));
    extent_page_ += n;
    return true;
  }
  return false;
}

// Places file pages [first, first + count) that are not in yet, a run of
// absent pages per UFFDIO_COPY (never across a region's end); returns how
// many it placed.
uint64_t UffdPager::Place(uint64_t first, uint64_t count) {
  alignas(kPage) static thread_local uint8_t buf[kChunkPages * kPage];
  if (!ReadAhead(buf, first, count)) return 0;
  uint64_t placed = 0, page = first;
  const uint64_t end = first + count;
  while (page < end) {
    const Range* r = RangeOfPage(page);
    if (r == nullptr) break;
    if (present_[page]) {
      ++page;
      continue;
    }
    uint64_t stop = page, run_end = std::min(end, (r->offset + r->size) / kPage);
    while (stop < run_end && !present_[stop]) ++stop;
    uint64_t done = CopyRun(*r, page, stop, buf + (page - first) * kPage);
    placed += done;
    page += std::max<uint64_t>(done, 1);
  }
  return placed;
}

// File pages [first, first + count) into `buf`; zeros past the file's end.
// False (and no retiring) if the file cannot be read: faults read again.
bool UffdPager::ReadAhead(uint8_t* buf, uint64_t first, uint64_t count) {
  ssize_t got = ::pread(file_.get(), buf, count * kPage, first * kPage);
  if (got < 0) {
    std::fprintf(stderr, "kindling: userfaultfd: reading pages %llu+%llu ahead failed: %s\n",
                 static_cast<unsigned long long>(first), static_cast<unsigned long long>(count),
                 std::strerror(errno));
    incomplete_ = true;
    return false;
  }
  if (static_cast<uint64_t>(got) < count * kPage) std::memset(buf + got, 0, count * kPage - got);
  return true;
}

// One UFFDIO_COPY of the absent pages [page, stop) from `src`; returns how
// many it placed. A page found in place (EEXIST) is marked present; one
// that could not be placed is left to a fault, and the pager must then not
// retire.
uint64_t UffdPager::CopyRun(const Range& r, uint64_t page, uint64_t stop, const uint8_t* src) {
  uffdio_copy c = {};
  c.dst = r.host + page * kPage - r.offset;
  c.src = reinterpret_cast<uint64_t>(src);
  c.len = (stop - page) * kPage;
  uint64_t done = stop - page;
  if (::ioctl(uffd_.get(), UFFDIO_COPY, &c) != 0) {
    done = c.copy > 0 ? static_cast<uint64_t>(c.copy) / kPage : 0;
    if (done == 0 && errno == EEXIST) {
      present_[page] = true;
    } else if (done == 0) {
      std::fprintf(stderr, "kindling: userfaultfd: loading page %llu ahead failed: %s\n",
                   static_cast<unsigned long long>(page), std::strerror(errno));
      incomplete_ = true;
    }
  }
  for (uint64_t i = 0; i < done; ++i) present_[page + i] = true;
  return done;
}

// Every data page is in: answer what is queued, then unregister the RAM
// (a fault still waiting is woken and retries without us: the pages left
// are the file's holes, zeros). False if it stays registered (the thread
// must then go on answering).
bool UffdPager::Retire() {
  AnswerFaults();
  for (const Range& r : ranges_) {
    uffdio_range range = {r.host, r.size};
    if (::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &range) != 0) {
      std::fprintf(stderr, "kindling: userfaultfd: unregistering guest RAM failed: %s\n",
                   std::strerror(errno));
      return false;
    }
  }
  retired_.store(true);
  return true;
}

}  // namespace migration
