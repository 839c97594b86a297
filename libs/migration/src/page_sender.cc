#include "page_sender.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <span>

#include "kindling/status_macros.h"

namespace migration {
namespace {

alignas(64) const uint8_t kZeroPage[kStreamPage] = {};

// How long a pause for the cap may last before the control is read again.
constexpr absl::Duration kPollEvery = absl::Milliseconds(50);

}  // namespace

PageSender::PageSender(FrameStream& s, vm_memory::GuestMemory& mem, MigrationControl& control,
                       uint64_t bandwidth)
    : s_(s),
      mem_(mem),
      control_(control),
      default_bandwidth_(bandwidth),
      bandwidth_(bandwidth),
      pace_start_(absl::Now()) {}

absl::Status PageSender::Send(const PageBitmap& bitmaps, bool skip_zero, bool may_stop_short) {
  may_stop_short_ = may_stop_short;
  stop_ = false;
  unsent_.reset();
  RETURN_IF_ERROR(Poll());
  if (stop_) {
    unsent_ = bitmaps;
    return absl::OkStatus();
  }
  const size_t n = std::min(bitmaps.size(), mem_.regions().size());
  for (size_t i = 0; i < n && !unsent_; ++i) {
    RETURN_IF_ERROR(SendRegion(i, bitmaps, skip_zero));
  }
  return Flush();
}

absl::Status PageSender::SendRegion(size_t index, const PageBitmap& bitmaps, bool skip_zero) {
  const vm_memory::GuestRegion& r = *mem_.regions()[index];
  const std::vector<uint64_t>& bits = bitmaps[index];
  const uint8_t* base = reinterpret_cast<const uint8_t*>(r.host_address().value);
  const uint64_t npages = r.size() / kStreamPage;
  for (size_t w = 0; w < bits.size(); ++w) {
    for (uint64_t word = bits[w]; word != 0; word &= word - 1) {
      uint64_t p = w * 64 + std::countr_zero(word);
      if (p >= npages) break;
      const uint8_t* host = base + p * kStreamPage;
      bool zero = std::memcmp(host, kZeroPage, kStreamPage) == 0;
      if (zero && skip_zero) continue;
      RETURN_IF_ERROR(Add(r.start().value + p * kStreamPage, host, zero));
    }
    if (stop_) {
      unsent_ = Unsent(bitmaps, index, w);
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

// bitmaps without region < `region` and, in it, without words <= `word`.
PageBitmap PageSender::Unsent(const PageBitmap& bitmaps, size_t region, size_t word) {
  PageBitmap out = bitmaps;
  for (size_t i = 0; i < region && i < out.size(); ++i) std::ranges::fill(out[i], 0);
  std::vector<uint64_t>& cut = out[region];
  std::fill(cut.begin(), cut.begin() + static_cast<ptrdiff_t>(std::min(word + 1, cut.size())), 0);
  return out;
}

// Extends the current run or flushes it and starts another.
absl::Status PageSender::Add(uint64_t gpa, const uint8_t* host, bool zero) {
  bool extends = run_pages_ > 0 && zero == run_zero_ &&
                 gpa == run_gpa_ + run_pages_ * kStreamPage &&
                 (zero || host == run_host_ + run_pages_ * kStreamPage) &&
                 run_pages_ < kMaxPagesPerFrame;
  if (!extends) {
    RETURN_IF_ERROR(Flush());
    run_gpa_ = gpa;
    run_host_ = host;
    run_zero_ = zero;
  }
  ++run_pages_;
  return absl::OkStatus();
}

absl::Status PageSender::Flush() {
  if (run_pages_ == 0) return absl::OkStatus();
  uint64_t len = run_pages_ * kStreamPage;
  if (run_zero_) {
    uint64_t hdr[2] = {run_gpa_, len};
    RETURN_IF_ERROR(
        s_.Send(FrameType::kZeroes, {reinterpret_cast<const uint8_t*>(hdr), sizeof hdr}));
  } else {
    RETURN_IF_ERROR(s_.Send(FrameType::kPages,
                            {reinterpret_cast<const uint8_t*>(&run_gpa_), sizeof run_gpa_},
                            {run_host_, len}));
  }
  pages_ += run_pages_;
  run_pages_ = 0;
  RETURN_IF_ERROR(Poll());
  return Pace();
}

absl::Status PageSender::Poll() {
  MigrationControl::Snapshot c = control_.Read();
  if (c.cancelled) return absl::CancelledError("the migration was cancelled");
  if (may_stop_short_ && c.postcopy_now) stop_ = true;
  uint64_t bw = c.bandwidth.value_or(default_bandwidth_);
  if (bw != bandwidth_) {  // a new cap counts from now
    bandwidth_ = bw;
    pace_start_ = absl::Now();
    pace_base_ = s_.bytes_sent();
  }
  return absl::OkStatus();
}

// Sleeps until the bytes sent since pace_start_ fit the cap, reading the
// control meanwhile (a cancel or a new cap does not wait for the pause).
absl::Status PageSender::Pace() {
  while (bandwidth_ != 0 && !stop_) {
    absl::Duration due =
        absl::Seconds(static_cast<double>(s_.bytes_sent() - pace_base_) / bandwidth_);
    absl::Duration ahead = due - (absl::Now() - pace_start_);
    if (ahead <= absl::ZeroDuration()) break;
    absl::SleepFor(std::min(ahead, kPollEvery));
    RETURN_IF_ERROR(Poll());
  }
  return absl::OkStatus();
}

}  // namespace migration
