// Post-copy, destination side: PostcopyPager answers userfaultfd faults on
// pages the guest does not have yet by asking the source, and places the
// pages the source sends. One thread does both, polling the userfaultfd,
// the stream and a stop eventfd.
#include "migration/postcopy.h"

#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "migration/uffd_pager.h"

namespace migration {
namespace {

constexpr uint64_t kPage = kStreamPage;

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("migration stream: ", what));
}

bool Test(const std::vector<uint64_t>& bits, uint64_t page) {
  return (bits[page / 64] >> (page % 64)) & 1;
}
void Clear(std::vector<uint64_t>& bits, uint64_t page) { bits[page / 64] &= ~(1ULL << (page % 64)); }
void Set(std::vector<uint64_t>& bits, uint64_t page) { bits[page / 64] |= 1ULL << (page % 64); }

// Makes the pre-copied, stale contents of `missing`'s pages go away, so
// that touching them faults.
absl::Status Discard(vm_memory::GuestMemory& memory, const PageBitmap& missing) {
  std::vector<const vm_memory::GuestRegion*> regions = memory.regions();
  for (size_t i = 0; i < regions.size(); ++i) {
    const uint64_t npages = regions[i]->size() / kPage;
    for (uint64_t p = 0; p < npages;) {
      if (!Test(missing[i], p)) {
        ++p;
        continue;
      }
      uint64_t n = 1;
      while (p + n < npages && Test(missing[i], p + n)) ++n;
      RETURN_IF_ERROR(memory.ZeroRange(
          vm_memory::GuestAddress(regions[i]->start().value + p * kPage), n * kPage));
      p += n;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostcopyPager>> PostcopyPager::Start(
    vm_memory::GuestMemory& memory, int fd, PageBitmap missing, absl::Duration peer_timeout,
    std::function<void(const absl::Status&)> on_failure) {
  if (missing.size() != memory.regions().size()) {
    return absl::InvalidArgumentError("post-copy: the bitmap does not match the RAM's regions");
  }
  for (const vm_memory::GuestRegion* r : memory.regions()) {
    if (r->private_file()) {  // its holes would read the file, not fault
      return absl::InvalidArgumentError("post-copy needs guest RAM in memfds, not a mapped file");
    }
  }
  std::unique_ptr<PostcopyPager> p(
      new PostcopyPager(memory, fd, std::move(missing), peer_timeout, std::move(on_failure)));
  RETURN_IF_ERROR(p->Register());
  {
    absl::MutexLock l(&p->mu_);
    RETURN_IF_ERROR(Discard(memory, p->missing_));
  }
  p->thread_ = std::thread([raw = p.get()] { raw->Serve(); });
  return p;
}

PostcopyPager::PostcopyPager(vm_memory::GuestMemory& memory, int fd, PageBitmap missing,
                             absl::Duration peer_timeout,
                             std::function<void(const absl::Status&)> on_failure)
    : memory_(memory), stream_(fd), peer_timeout_(peer_timeout),
      on_failure_(std::move(on_failure)), missing_(std::move(missing)) {
  for (const vm_memory::GuestRegion* r : memory.regions()) {
    regions_.push_back({r->host_address().value, r->size(), r->start().value});
    requested_.emplace_back(missing_[requested_.size()].size(), 0);
  }
  stats_.pages_missing = CountPages(missing_);
}

absl::Status PostcopyPager::Register() {
  ASSIGN_OR_RETURN(uffd_, RegisterMissingFaults(memory_, "post-copy"));
  stop_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!stop_.valid()) return absl::ErrnoToStatus(errno, "eventfd");
  return absl::OkStatus();
}

PostcopyPager::~PostcopyPager() {
  uint64_t one = 1;
  if (stop_.valid()) (void)!::write(stop_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  bool went, complete, failed;
  {
    absl::MutexLock l(&mu_);
    went = go_;
    complete = complete_;
    failed = !failed_.ok();
  }
  if (went && !complete && !failed) {  // the guest ended before its RAM came
    absl::MutexLock s(&send_mu_);
    (void)stream_.SendText(FrameType::kError,
                           "the guest stopped on the destination before post-copy finished");
  }
  // Closing would let a blocked fault through to a zero page.
  if (went && failed) (void)uffd_.release();
}

absl::Status PostcopyPager::Finish(absl::Duration timeout) {
  RETURN_IF_ERROR(SendFrame(FrameType::kDone, {}));
  absl::MutexLock l(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return go_ || !failed_.ok(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    return absl::DeadlineExceededError("post-copy: the source sent no GO in time");
  }
  return failed_;
}

absl::Status PostcopyPager::WaitComplete(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return complete_ || !failed_.ok(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "post-copy: ", stats_.pages_missing, " pages still missing after ",
        absl::FormatDuration(timeout)));
  }
  return failed_;
}

PostcopyPager::Stats PostcopyPager::stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

void PostcopyPager::Serve() {
  bool complete = false;
  while (!complete) {
    absl::Status s = ServeOnce(complete);
    if (absl::IsCancelled(s)) return;
    if (!s.ok()) return Fail(s);
  }
  Unregister();  // every page is in: faults are the kernel's again
  absl::MutexLock l(&mu_);
  complete_ = true;
}

absl::Status PostcopyPager::ServeOnce(bool& complete) {
  pollfd p[3] = {{uffd_.get(), POLLIN, 0}, {stream_.fd(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
  int n = ::poll(p, 3, 1000);
  if (n < 0 && errno != EINTR) return absl::ErrnoToStatus(errno, "post-copy: poll");
  if (p[2].revents) return absl::CancelledError("stopped");
  if (p[0].revents & POLLIN) RETURN_IF_ERROR(DrainFaults());
  if (p[1].revents) {
    ASSIGN_OR_RETURN(Frame f, stream_.Receive(absl::Now() + peer_timeout_));
    last_frame_ = absl::Now();
    return OnFrame(f, complete);
  }
  absl::MutexLock l(&mu_);
  if (go_ && stats_.pages_missing > 0 && absl::Now() - last_frame_ > peer_timeout_) {
    return absl::DeadlineExceededError(absl::StrCat(
        "post-copy: the source sent nothing for ", absl::FormatDuration(peer_timeout_),
        " with ", stats_.pages_missing, " pages still missing"));
  }
  return absl::OkStatus();
}

absl::Status PostcopyPager::DrainFaults() {
  for (;;) {
    uffd_msg msg;
    ssize_t n = ::read(uffd_.get(), &msg, sizeof msg);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return absl::OkStatus();
    if (n != sizeof msg) return absl::ErrnoToStatus(errno, "reading the userfaultfd");
    if (msg.event == UFFD_EVENT_PAGEFAULT) RETURN_IF_ERROR(Fault(msg.arg.pagefault.address));
  }
}

// A missing page is asked for (once); any other page the guest never had
// is a zero page.
absl::Status PostcopyPager::Fault(uint64_t host_address) {
  const uint64_t host = host_address & ~(kPage - 1);
  for (size_t i = 0; i < regions_.size(); ++i) {
    const Region& r = regions_[i];
    if (host < r.host || host >= r.host + r.size) continue;
    const uint64_t page = (host - r.host) / kPage;
    bool ask = false;
    {
      absl::MutexLock l(&mu_);
      ++stats_.faults;
      if (Test(missing_[i], page)) {
        if (Test(requested_[i], page)) return absl::OkStatus();
        Set(requested_[i], page);
        ++stats_.requests;
        ask = true;
      }
    }
    if (ask) {
      uint64_t gpa = r.gpa + (host - r.host);
      return SendFrame(FrameType::kPageRequest, {reinterpret_cast<const uint8_t*>(&gpa), 8});
    }
    uffdio_zeropage z = {};
    z.range = {host, kPage};
    if (::ioctl(uffd_.get(), UFFDIO_ZEROPAGE, &z) == 0) return absl::OkStatus();
    if (errno != EEXIST) return absl::ErrnoToStatus(errno, "UFFDIO_ZEROPAGE");
    uffdio_range wake = {host, kPage};
    (void)::ioctl(uffd_.get(), UFFDIO_WAKE, &wake);
    return absl::OkStatus();
  }
  return absl::OkStatus();  // not guest RAM: cannot happen, nothing to answer
}

absl::Status PostcopyPager::OnFrame(const Frame& f, bool& complete) {
  switch (f.type) {
    case FrameType::kPages: return Place(f);
    case FrameType::kGo: {
      absl::MutexLock l(&mu_);
      if (go_ || !done_sent_) return Bad("GO before DONE");
      go_ = true;
      return absl::OkStatus();
    }
    case FrameType::kPostcopyEnd: {
      {
        absl::MutexLock l(&mu_);
        if (!go_) return Bad("POSTCOPY_END before GO");
        if (stats_.pages_missing != 0) {
          return Bad(absl::StrCat("POSTCOPY_END with ", stats_.pages_missing,
                                  " pages still missing"));
        }
      }
      complete = true;
      return SendFrame(FrameType::kDone, {});
    }
    case FrameType::kError:
      return absl::AbortedError(absl::StrCat("the source gave up: ", f.payload));
    default:
      return Bad(absl::StrCat("unexpected ", FrameTypeName(f.type), " during post-copy"));
  }
}

// Copies the frame's missing pages into place, waking whoever waits on
// them; pages the guest already has are left alone.
absl::Status PostcopyPager::Place(const Frame& f) {
  ASSIGN_OR_RETURN(PagesFrame pf, ParsePagesFrame(f));
  const uint64_t len = pf.data.size();
  for (size_t i = 0; i < regions_.size(); ++i) {
    const Region& r = regions_[i];
    if (pf.gpa < r.gpa || pf.gpa - r.gpa >= r.size || len > r.size - (pf.gpa - r.gpa)) continue;
    const uint64_t first = (pf.gpa - r.gpa) / kPage;
    for (uint64_t k = 0; k < len / kPage; ++k) {
      {
        absl::MutexLock l(&mu_);
        if (!Test(missing_[i], first + k)) continue;
      }
      uffdio_copy c = {};
      c.dst = r.host + (first + k) * kPage;
      c.src = reinterpret_cast<uint64_t>(pf.data.data() + k * kPage);
      c.len = kPage;
      while (::ioctl(uffd_.get(), UFFDIO_COPY, &c) != 0 && errno == EAGAIN) {
      }
      if (c.copy < 0 && c.copy != -EEXIST) {
        return absl::ErrnoToStatus(static_cast<int>(-c.copy), "UFFDIO_COPY");
      }
      absl::MutexLock l(&mu_);
      Clear(missing_[i], first + k);
      ++stats_.pages_placed;
      --stats_.pages_missing;
    }
    return absl::OkStatus();
  }
  return Bad(absl::StrCat(len / kPage, " pages at 0x", absl::Hex(pf.gpa), " are not guest RAM"));
}

absl::Status PostcopyPager::SendFrame(FrameType type, std::span<const uint8_t> payload) {
  if (type == FrameType::kDone) {
    absl::MutexLock m(&mu_);
    done_sent_ = true;
  }
  absl::MutexLock l(&send_mu_);
  return stream_.Send(type, payload);
}

void PostcopyPager::Unregister() {
  for (const Region& r : regions_) {
    uffdio_range range = {r.host, r.size};
    (void)::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &range);
  }
}

void PostcopyPager::Fail(const absl::Status& why) {
  bool went;
  {
    absl::MutexLock l(&mu_);
    failed_ = why;
    went = go_;
  }
  {
    absl::MutexLock l(&send_mu_);
    (void)stream_.SendText(FrameType::kError, std::string(why.message()));
  }
  if (went && on_failure_) on_failure_(why);
}

}  // namespace migration
