// Live migration: the source's rounds and switch-over, the destination's
// loading. See docs/design/migration.md for the protocol.
#include "migration/precopy.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "migration/memory_file.h"
#include "migration/snapshot.h"

namespace migration {
namespace {

alignas(64) const uint8_t kZeroPage[kStreamPage] = {};

std::span<const uint8_t> AsBytes(const uint64_t& v) {
  return {reinterpret_cast<const uint8_t*>(&v), sizeof v};
}

// Sends pages of guest RAM, paced to the bandwidth limit.
class PageSender {
 public:
  PageSender(FrameStream& s, vm_memory::GuestMemory& mem, uint64_t bandwidth)
      : s_(s), mem_(mem), bandwidth_(bandwidth), start_(absl::Now()) {}

  // Every page whose bit is set in bitmaps[i] (region i). Zero pages are
  // skipped when `skip_zero` (the destination's RAM is still zero there)
  // and sent as ZEROES otherwise.
  absl::Status Send(const std::vector<std::vector<uint64_t>>& bitmaps, bool skip_zero) {
    std::vector<const vm_memory::GuestRegion*> regions = mem_.regions();
    for (size_t i = 0; i < regions.size() && i < bitmaps.size(); ++i) {
      RETURN_IF_ERROR(SendRegion(*regions[i], bitmaps[i], skip_zero));
    }
    return Flush();
  }
  uint64_t pages_sent() const { return pages_; }

 private:
  absl::Status SendRegion(const vm_memory::GuestRegion& r, const std::vector<uint64_t>& bits,
                          bool skip_zero) {
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
    }
    return absl::OkStatus();
  }

  // Extends the current run or flushes it and starts another.
  absl::Status Add(uint64_t gpa, const uint8_t* host, bool zero) {
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

  absl::Status Flush() {
    if (run_pages_ == 0) return absl::OkStatus();
    uint64_t len = run_pages_ * kStreamPage;
    if (run_zero_) {
      uint64_t hdr[2] = {run_gpa_, len};
      RETURN_IF_ERROR(s_.Send(FrameType::kZeroes,
                              {reinterpret_cast<const uint8_t*>(hdr), sizeof hdr}));
    } else {
      RETURN_IF_ERROR(s_.Send(FrameType::kPages, AsBytes(run_gpa_), {run_host_, len}));
    }
    pages_ += run_pages_;
    run_pages_ = 0;
    Pace();
    return absl::OkStatus();
  }

  void Pace() {
    if (bandwidth_ == 0) return;
    absl::Duration due = absl::Seconds(static_cast<double>(s_.bytes_sent()) / bandwidth_);
    absl::Duration ahead = due - (absl::Now() - start_);
    if (ahead > absl::ZeroDuration()) absl::SleepFor(ahead);
  }

  FrameStream& s_;
  vm_memory::GuestMemory& mem_;
  uint64_t bandwidth_;
  absl::Time start_;
  uint64_t pages_ = 0;
  uint64_t run_gpa_ = 0, run_pages_ = 0;
  const uint8_t* run_host_ = nullptr;
  bool run_zero_ = false;
};

// Round 0's pages: every page of the regions' data extents (holes of a
// memfd read as zero and need not be read, which would allocate them).
std::vector<std::vector<uint64_t>> AllPages(const vm_memory::GuestMemory& mem) {
  std::vector<std::vector<uint64_t>> out;
  for (const vm_memory::GuestRegion* r : mem.regions()) {
    uint64_t npages = r->size() / kStreamPage;
    std::vector<uint64_t> bits((npages + 63) / 64, 0);
    auto mark = [&](uint64_t lo, uint64_t hi) {
      for (uint64_t p = lo / kStreamPage; p < (hi + kStreamPage - 1) / kStreamPage && p < npages;
           ++p) {
        bits[p / 64] |= 1ULL << (p % 64);
      }
    };
    // A lazily restored region's file holes say nothing about its pages.
    absl::StatusOr<std::vector<std::pair<uint64_t, uint64_t>>> ranges =
        absl::UnimplementedError("not a memfd");
    if (!r->private_file()) ranges = DataRanges(r->fd(), r->size());
    if (!ranges.ok()) ranges = {{0, r->size()}};
    for (const auto& [lo, hi] : *ranges) mark(lo, hi);
    out.push_back(std::move(bits));
  }
  return out;
}

// Auto-converge: QEMU's rule (a round that dirtied more than half of what
// it sent, twice) raises the throttle 20 %, then 10 % at a time.
class Throttle {
 public:
  int Update(uint64_t dirtied_bytes, uint64_t sent_bytes) {
    if (dirtied_bytes * 2 > sent_bytes && ++strikes_ >= 2) {
      strikes_ = 0;
      percent_ = percent_ == 0 ? 20 : std::min(99, percent_ + 10);
    }
    return percent_;
  }
  int percent() const { return percent_; }

 private:
  int strikes_ = 0;
  int percent_ = 0;
};

class Migration {
 public:
  Migration(int fd, MigrationSource& vm, const MigrationOptions& o,
            const std::function<void(const MigrationProgress&)>& progress)
      : s_(fd), vm_(vm), o_(o), progress_(progress),
        sender_(s_, vm.memory(), o.bandwidth_bytes_per_s) {}

  absl::Status Run() {
    RETURN_IF_ERROR(Handshake());
    RETURN_IF_ERROR(vm_.StartDirtyLog());
    dirty_log_ = true;
    RETURN_IF_ERROR(Precopy());
    return o_.mode == MigrationMode::kPostcopy ? SwitchToPostcopy() : SwitchOver();
  }

  // Undoes what a failed run left behind; the source runs on, unless a
  // post-copy's GO went out (the guest ran on there): it stays stopped.
  void Abort(const absl::Status& why) {
    (void)s_.SendText(FrameType::kError, std::string(why.message()));
    if (stopped_ && !went_) vm_.Resume();
    vm_.SetThrottle(0);
    if (dirty_log_) vm_.StopDirtyLog();
  }
  bool went() const { return went_; }

 private:
  absl::Time Deadline() const { return absl::Now() + o_.peer_timeout; }

  absl::Status Handshake() {
    v1::MigrationHello hello;
    hello.set_stream_version(kStreamVersion);
    *hello.mutable_machine() = vm_.machine();
    hello.set_ram_bytes(vm_.memory().total_size());
    ASSIGN_OR_RETURN(*hello.mutable_skeleton(), vm_.DescribeMachine());
    hello.mutable_skeleton()->set_format_version(1);
    *hello.mutable_skeleton()->mutable_machine() = vm_.machine();
    std::string bytes = hello.SerializeAsString();
    RETURN_IF_ERROR(s_.Send(FrameType::kHello, {reinterpret_cast<const uint8_t*>(bytes.data()),
                                                bytes.size()}));
    return s_.Expect(FrameType::kReady, Deadline()).status();
  }

  absl::Status Precopy() {
    RETURN_IF_ERROR(SendRound(AllPages(vm_.memory()), /*skip_zero=*/true));
    const int max_rounds = o_.mode == MigrationMode::kAutoConverge ? o_.max_rounds * 4
                                                                   : o_.max_rounds;
    for (p_.round = 1;; ++p_.round) {
      ASSIGN_OR_RETURN(std::vector<std::vector<uint64_t>> dirty, vm_.TakeDirty());
      p_.dirty_pages = CountPages(dirty);
      uint64_t dirty_bytes = p_.dirty_pages * kStreamPage;
      if (Fits(dirty_bytes) ||
          (o_.mode == MigrationMode::kPostcopy && p_.round > o_.postcopy_after_rounds)) {
        pending_ = std::move(dirty);
        return absl::OkStatus();
      }
      if (p_.round > max_rounds) {
        return absl::DeadlineExceededError(absl::StrCat(
            "did not converge after ", max_rounds, " rounds: ", dirty_bytes >> 10,
            " KiB dirtied in the last one, sent at ", p_.rate_bytes_per_s >> 10,
            " KiB/s, which would stop the guest longer than ",
            absl::FormatDuration(o_.max_downtime),
            o_.mode == MigrationMode::kPrecopy ? " (try --mode auto-converge)" : ""));
      }
      if (o_.mode == MigrationMode::kAutoConverge) {
        int pct = throttle_.Update(dirty_bytes, last_round_bytes_);
        if (pct != p_.throttle_percent) vm_.SetThrottle(pct);
        p_.throttle_percent = pct;
      }
      RETURN_IF_ERROR(SendRound(dirty, /*skip_zero=*/false));
    }
  }

  // Whether `bytes` go within the downtime limit at the measured rate.
  bool Fits(uint64_t bytes) const {
    if (bytes == 0) return true;
    if (p_.rate_bytes_per_s == 0) return false;
    return absl::Seconds(static_cast<double>(bytes) / p_.rate_bytes_per_s) <= o_.max_downtime;
  }

  absl::Status SendRound(const std::vector<std::vector<uint64_t>>& pages, bool skip_zero) {
    absl::Time t0 = absl::Now();
    uint64_t b0 = s_.bytes_sent();
    RETURN_IF_ERROR(sender_.Send(pages, skip_zero));
    last_round_bytes_ = s_.bytes_sent() - b0;
    double secs = absl::ToDoubleSeconds(absl::Now() - t0);
    // Rounds too short to time say little; keep the last good figure.
    if (last_round_bytes_ >= (1 << 20) || p_.rate_bytes_per_s == 0) {
      p_.rate_bytes_per_s = static_cast<uint64_t>(last_round_bytes_ / std::max(secs, 1e-4));
    }
    if (o_.bandwidth_bytes_per_s) {
      p_.rate_bytes_per_s = std::min(p_.rate_bytes_per_s, o_.bandwidth_bytes_per_s);
    }
    Report("precopy");
    return absl::OkStatus();
  }

  // Stops the guest; returns every page it dirtied since the last round
  // was sent.
  absl::StatusOr<PageBitmap> StopAndTakeDirty() {
    stop_time_ = absl::Now();
    stopped_ = true;  // even a Stop that fails halfway is undone by Resume
    RETURN_IF_ERROR(vm_.Stop());
    ASSIGN_OR_RETURN(PageBitmap last, vm_.TakeDirty());
    for (size_t i = 0; i < last.size() && i < pending_.size(); ++i) {
      for (size_t w = 0; w < last[i].size() && w < pending_[i].size(); ++w) {
        last[i][w] |= pending_[i][w];
      }
    }
    return last;
  }

  absl::Status SendStateAndEnd() {
    ASSIGN_OR_RETURN(v1::Snapshot state, vm_.CaptureState());
    state.set_format_version(1);
    *state.mutable_machine()->mutable_regions() = vm_.machine().regions();
    std::string bytes = state.SerializeAsString();
    if (bytes.size() > kMaxFramePayload) {  // the destination would refuse it
      return absl::ResourceExhaustedError(absl::StrCat(
          "the VM's state is ", bytes.size() >> 10, " KiB, more than a migration stream's ",
          kMaxFramePayload >> 10, " KiB state frame holds (a GPU's resources?)"));
    }
    RETURN_IF_ERROR(s_.Send(FrameType::kState, {reinterpret_cast<const uint8_t*>(bytes.data()),
                                                bytes.size()}));
    return s_.Send(FrameType::kEnd, {});
  }

  absl::Status SwitchOver() {
    ASSIGN_OR_RETURN(PageBitmap last, StopAndTakeDirty());
    RETURN_IF_ERROR(sender_.Send(last, /*skip_zero=*/false));
    RETURN_IF_ERROR(SendStateAndEnd());
    RETURN_IF_ERROR(s_.Expect(FrameType::kDone, Deadline()).status());
    RETURN_IF_ERROR(s_.Send(FrameType::kGo, {}));
    p_.downtime = absl::Now() - stop_time_;
    Finished();
    return absl::OkStatus();
  }

  // The dirtied pages do not wait: the guest moves with the state, and the
  // destination gets them on demand and in the background.
  absl::Status SwitchToPostcopy() {
    ASSIGN_OR_RETURN(PageBitmap last, StopAndTakeDirty());
    std::string bits = EncodePageBitmap(last);
    RETURN_IF_ERROR(s_.Send(FrameType::kPostcopy,
                            {reinterpret_cast<const uint8_t*>(bits.data()), bits.size()}));
    RETURN_IF_ERROR(SendStateAndEnd());
    p_.postcopy_left = CountPages(last);
    const uint64_t total = p_.postcopy_left;
    auto on_go = [&] {
      went_ = true;
      p_.downtime = absl::Now() - stop_time_;
      vm_.StopDirtyLog();
      dirty_log_ = false;
    };
    auto on_progress = [&](const PostcopySourceStats& st) {
      postcopy_pages_ = st.pages_sent;
      p_.postcopy_requests = st.requests;
      p_.postcopy_left = total - st.pages_sent;
      Report("postcopy");
    };
    const uint64_t cap = o_.postcopy_bandwidth_bytes_per_s ? o_.postcopy_bandwidth_bytes_per_s
                                                           : o_.bandwidth_bytes_per_s;
    RETURN_IF_ERROR(ServePostcopy(s_, vm_.memory(), std::move(last), cap, o_.peer_timeout, on_go,
                                  on_progress));
    Finished();
    return absl::OkStatus();
  }

  void Finished() {
    vm_.SetThrottle(0);
    if (dirty_log_) vm_.StopDirtyLog();
    dirty_log_ = false;
    vm_.Migrated();
    Report("done");
  }

  void Report(const char* phase) {
    p_.phase = phase;
    p_.pages_sent = sender_.pages_sent() + postcopy_pages_;
    p_.bytes_sent = s_.bytes_sent();
    if (progress_) progress_(p_);
  }

  FrameStream s_;
  MigrationSource& vm_;
  const MigrationOptions& o_;
  const std::function<void(const MigrationProgress&)>& progress_;
  PageSender sender_;
  Throttle throttle_;
  MigrationProgress p_;
  std::vector<std::vector<uint64_t>> pending_;  // dirty when pre-copy ended
  uint64_t last_round_bytes_ = 0;
  uint64_t postcopy_pages_ = 0;
  absl::Time stop_time_;
  bool dirty_log_ = false;
  bool stopped_ = false;
  bool went_ = false;  // post-copy: GO sent, the guest is the destination's
};

constexpr char kStrandedPayload[] = "kindling.dev/migration/source-stranded";

}  // namespace

absl::StatusOr<MigrationMode> ParseMigrationMode(std::string_view name) {
  if (name == "precopy") return MigrationMode::kPrecopy;
  if (name == "auto-converge") return MigrationMode::kAutoConverge;
  if (name == "postcopy") return MigrationMode::kPostcopy;
  return absl::InvalidArgumentError(absl::StrCat(
      "migration mode '", std::string(name), "': expected precopy, auto-converge or postcopy"));
}

bool SourceStranded(const absl::Status& s) {
  return s.GetPayload(kStrandedPayload).has_value();
}

absl::Status Migrate(int fd, MigrationSource& vm, const MigrationOptions& options,
                     const std::function<void(const MigrationProgress&)>& progress) {
  Migration m(fd, vm, options, progress);
  absl::Status s = m.Run();
  if (s.ok()) return s;
  m.Abort(s);
  if (!m.went()) return s;
  absl::Status stranded = absl::AbortedError(absl::StrCat(
      "post-copy failed after the switch-over: ", s.message(),
      "; the guest stays paused here with its state as at the switch-over (it ran on at the "
      "destination: resuming it here would fork it)"));
  stranded.SetPayload(kStrandedPayload, absl::Cord("1"));
  return stranded;
}

}  // namespace migration
