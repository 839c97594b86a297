// Post-copy's wire pieces shared by both ends: the POSTCOPY bitmap and
// PAGES frames taken apart; and the source's serving of missing pages.
#include <poll.h>

#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "migration/postcopy.h"

namespace migration {
namespace {

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("migration stream: ", what));
}

constexpr uint64_t kPushPages = 64;  // a background frame: 256 KiB
constexpr uint64_t kAfterRequest = 16;  // pages sent with a requested one

uint64_t WordsFor(uint64_t bytes) { return (bytes / kStreamPage + 63) / 64; }

}  // namespace

uint64_t CountPages(const PageBitmap& bits) {
  uint64_t n = 0;
  for (const auto& region : bits) {
    for (uint64_t w : region) n += std::popcount(w);
  }
  return n;
}

std::string EncodePageBitmap(const PageBitmap& bits) {
  std::string out;
  for (const auto& region : bits) {
    out.append(reinterpret_cast<const char*>(region.data()), region.size() * 8);
  }
  return out;
}

absl::StatusOr<PageBitmap> DecodePageBitmap(std::string_view payload,
                                            const vm_memory::GuestMemory& memory) {
  PageBitmap out;
  uint64_t want = 0;
  for (const vm_memory::GuestRegion* r : memory.regions()) want += WordsFor(r->size()) * 8;
  if (payload.size() != want) {
    return Bad(absl::StrCat("a POSTCOPY bitmap of ", payload.size(), " bytes for RAM that needs ",
                            want));
  }
  for (const vm_memory::GuestRegion* r : memory.regions()) {
    const uint64_t pages = r->size() / kStreamPage;
    std::vector<uint64_t> words(WordsFor(r->size()));
    std::memcpy(words.data(), payload.data(), words.size() * 8);
    payload.remove_prefix(words.size() * 8);
    if (pages % 64 != 0 && (words.back() >> (pages % 64)) != 0) {
      return Bad(absl::StrCat("the POSTCOPY bitmap marks pages past the region at 0x",
                              absl::Hex(r->start().value)));
    }
    out.push_back(std::move(words));
  }
  return out;
}

absl::StatusOr<PagesFrame> ParsePagesFrame(const Frame& f) {
  if (f.payload.size() < 8 + kStreamPage || (f.payload.size() - 8) % kStreamPage != 0) {
    return Bad(absl::StrCat("a PAGES frame of ", f.payload.size(), " bytes is not whole pages"));
  }
  PagesFrame out;
  std::memcpy(&out.gpa, f.payload.data(), 8);
  if (out.gpa % kStreamPage != 0) return Bad(absl::StrCat("page address 0x", absl::Hex(out.gpa)));
  out.data = {reinterpret_cast<const uint8_t*>(f.payload.data()) + 8, f.payload.size() - 8};
  return out;
}

namespace {

// The source after END: what the destination still lacks, and sending it.
class PostcopySource {
 public:
  PostcopySource(FrameStream& s, vm_memory::GuestMemory& mem, PageBitmap missing,
                 uint64_t bandwidth, absl::Duration timeout,
                 const std::function<void(const PostcopySourceStats&)>& progress)
      : s_(s), regions_(mem.regions()), missing_(std::move(missing)),
        left_(CountPages(missing_)), bandwidth_(bandwidth), timeout_(timeout),
        progress_(progress) {}

  // Until the destination's DONE: only what its faults ask for.
  absl::Status AnswerUntilDone() {
    for (;;) {
      ASSIGN_OR_RETURN(Frame f, s_.Receive(absl::Now() + timeout_));
      if (f.type == FrameType::kDone) return absl::OkStatus();
      RETURN_IF_ERROR(OnRequest(f));
    }
  }

  // After GO: every missing page, requested ones first, then END and the
  // destination's last DONE.
  absl::Status Push() {
    start_ = absl::Now();
    sent_at_start_ = s_.bytes_sent();
    size_t region = 0;
    uint64_t page = 0;
    while (left_ > 0) {
      RETURN_IF_ERROR(AnswerWaiting());
      if (!NextMissing(region, page)) break;
      RETURN_IF_ERROR(SendRun(region, page, kPushPages));
      RETURN_IF_ERROR(Pace());
      if (++frames_ % 64 == 0 && progress_) progress_(stats_);
    }
    RETURN_IF_ERROR(s_.Send(FrameType::kPostcopyEnd, {}));
    for (;;) {  // requests already on their way are answered by what was sent
      ASSIGN_OR_RETURN(Frame f, s_.Receive(absl::Now() + timeout_));
      if (f.type == FrameType::kDone) break;
      RETURN_IF_ERROR(OnRequest(f));
    }
    if (progress_) progress_(stats_);
    return absl::OkStatus();
  }

 private:
  absl::Status AnswerWaiting() {
    for (;;) {
      pollfd p = {s_.fd(), POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) return absl::OkStatus();
      ASSIGN_OR_RETURN(Frame f, s_.Receive(absl::Now() + timeout_));
      RETURN_IF_ERROR(OnRequest(f));
    }
  }

  absl::Status OnRequest(const Frame& f) {
    if (f.type == FrameType::kError) {
      return absl::AbortedError(absl::StrCat("the destination gave up: ", f.payload));
    }
    if (f.type != FrameType::kPageRequest || f.payload.size() != 8) {
      return Bad(absl::StrCat("unexpected ", FrameTypeName(f.type), " during post-copy"));
    }
    uint64_t gpa;
    std::memcpy(&gpa, f.payload.data(), 8);
    for (size_t i = 0; i < regions_.size(); ++i) {
      const vm_memory::GuestRegion& r = *regions_[i];
      if (gpa < r.start().value || gpa - r.start().value >= r.size()) continue;
      ++stats_.requests;
      // A page sent meanwhile arrives before the destination reads this.
      uint64_t page = (gpa - r.start().value) / kStreamPage;
      if (!Missing(i, page)) return absl::OkStatus();
      return SendRun(i, page, kAfterRequest);  // faults come in runs
    }
    return Bad(absl::StrCat("PAGE_REQUEST for 0x", absl::Hex(gpa), ", which is not guest RAM"));
  }

  bool Missing(size_t region, uint64_t page) const {
    return (missing_[region][page / 64] >> (page % 64)) & 1;
  }

  // The next missing page at or after (region, page), wrapping once.
  bool NextMissing(size_t& region, uint64_t& page) const {
    for (size_t n = 0; n <= regions_.size(); ++n, region = (region + 1) % regions_.size(), page = 0) {
      const std::vector<uint64_t>& words = missing_[region];
      for (uint64_t w = page / 64; w < words.size(); ++w) {
        uint64_t word = words[w];
        if (w == page / 64) word &= ~0ULL << (page % 64);
        if (word != 0) {
          page = w * 64 + std::countr_zero(word);
          return true;
        }
      }
    }
    return false;
  }

  // Up to `max` consecutive missing pages from `page` in one frame.
  absl::Status SendRun(size_t region, uint64_t page, uint64_t max) {
    const vm_memory::GuestRegion& r = *regions_[region];
    const uint64_t npages = r.size() / kStreamPage;
    uint64_t n = 0;
    while (n < max && page + n < npages && Missing(region, page + n)) {
      missing_[region][(page + n) / 64] &= ~(1ULL << ((page + n) % 64));
      ++n;
    }
    if (n == 0) return absl::OkStatus();
    left_ -= n;
    stats_.pages_sent += n;
    uint64_t gpa = r.start().value + page * kStreamPage;
    const uint8_t* host = reinterpret_cast<const uint8_t*>(r.host_address().value) +
                          page * kStreamPage;
    return s_.Send(FrameType::kPages, {reinterpret_cast<const uint8_t*>(&gpa), 8},
                   {host, n * kStreamPage});
  }

  // Keeps the push to the cap, answering requests while it waits.
  absl::Status Pace() {
    if (bandwidth_ == 0) return absl::OkStatus();
    for (;;) {
      absl::Duration due = absl::Seconds(static_cast<double>(s_.bytes_sent() - sent_at_start_) /
                                         bandwidth_);
      absl::Duration ahead = due - (absl::Now() - start_);
      if (ahead <= absl::ZeroDuration()) return absl::OkStatus();
      RETURN_IF_ERROR(AnswerWaiting());
      absl::SleepFor(std::min(ahead, absl::Milliseconds(2)));
    }
  }

  FrameStream& s_;
  std::vector<const vm_memory::GuestRegion*> regions_;
  PageBitmap missing_;
  uint64_t left_;
  uint64_t bandwidth_;
  absl::Duration timeout_;
  const std::function<void(const PostcopySourceStats&)>& progress_;
  PostcopySourceStats stats_;
  absl::Time start_;
  uint64_t sent_at_start_ = 0;
  uint64_t frames_ = 0;
};

}  // namespace

absl::Status ServePostcopy(FrameStream& s, vm_memory::GuestMemory& memory, PageBitmap missing,
                           uint64_t bandwidth_bytes_per_s, absl::Duration peer_timeout,
                           const std::function<bool()>& may_go,
                           const std::function<void()>& on_go,
                           const std::function<void(const PostcopySourceStats&)>& progress) {
  if (missing.size() != memory.regions().size()) {
    return absl::InternalError("post-copy: the bitmap does not match the RAM's regions");
  }
  PostcopySource src(s, memory, std::move(missing), bandwidth_bytes_per_s, peer_timeout, progress);
  RETURN_IF_ERROR(src.AnswerUntilDone());
  if (!may_go()) return absl::CancelledError("the migration was cancelled before the switch-over");
  RETURN_IF_ERROR(s.Send(FrameType::kGo, {}));
  on_go();
  return src.Push();
}

}  // namespace migration
