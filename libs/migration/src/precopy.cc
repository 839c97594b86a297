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
#include "page_sender.h"

namespace migration {
namespace {

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
      : s_(fd),
        vm_(vm),
        o_(o),
        progress_(progress),
        c_(o.control ? *o.control : own_control_),
        sender_(s_, vm.memory(), c_, o.bandwidth_bytes_per_s) {
    c_.Attach(o.mode == MigrationMode::kPostcopy, fd);
    s_.SetSendLimits(o.peer_timeout, [this] { return c_.cancelled(); });
  }
  ~Migration() { c_.Detach(); }

  absl::Status Run() {
    RETURN_IF_ERROR(Handshake());
    RETURN_IF_ERROR(vm_.StartDirtyLog());
    dirty_log_ = true;
    RETURN_IF_ERROR(Precopy());
    c_.Switching();
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
  bool cancelled() const { return c_.cancelled(); }

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
    const bool postcopy = o_.mode == MigrationMode::kPostcopy;
    RETURN_IF_ERROR(SendRound(AllPages(vm_.memory()), /*skip_zero=*/true));
    const int max_rounds = o_.mode == MigrationMode::kAutoConverge ? o_.max_rounds * 4
                                                                   : o_.max_rounds;
    for (p_.round = 1;; ++p_.round) {
      if (sender_.stopped_short()) {  // post-copy asked for: the rest follows on demand
        pending_ = *sender_.stopped_short();
        return absl::OkStatus();
      }
      ASSIGN_OR_RETURN(std::vector<std::vector<uint64_t>> dirty, vm_.TakeDirty());
      p_.dirty_pages = CountPages(dirty);
      uint64_t dirty_bytes = p_.dirty_pages * kStreamPage;
      MigrationControl::Snapshot c = c_.Read();
      if (c.cancelled) return absl::CancelledError("the migration was cancelled");
      if (Fits(dirty_bytes) ||
          (postcopy && (p_.round > o_.postcopy_after_rounds || c.postcopy_now))) {
        pending_ = std::move(dirty);
        return absl::OkStatus();
      }
      if (p_.round > max_rounds) return NotConverged(max_rounds, dirty_bytes);
      if (o_.mode == MigrationMode::kAutoConverge) {
        int pct = throttle_.Update(dirty_bytes, last_round_bytes_);
        if (pct != p_.throttle_percent) vm_.SetThrottle(pct);
        p_.throttle_percent = pct;
      }
      RETURN_IF_ERROR(SendRound(dirty, /*skip_zero=*/false));
    }
  }

  absl::Status NotConverged(int rounds, uint64_t dirty_bytes) const {
    return absl::DeadlineExceededError(absl::StrCat(
        "did not converge after ", rounds, " rounds: ", dirty_bytes >> 10,
        " KiB dirtied in the last one, sent at ", p_.rate_bytes_per_s >> 10,
        " KiB/s, which would stop the guest longer than ", absl::FormatDuration(MaxDowntime()),
        o_.mode == MigrationMode::kPrecopy ? " (try --mode auto-converge)" : ""));
  }

  // The limits as the control has them now.
  absl::Duration MaxDowntime() const { return c_.Read().max_downtime.value_or(o_.max_downtime); }
  uint64_t Bandwidth() const { return c_.Read().bandwidth.value_or(o_.bandwidth_bytes_per_s); }

  // Whether `bytes` go within the downtime limit at the measured rate.
  bool Fits(uint64_t bytes) const {
    if (bytes == 0) return true;
    if (p_.rate_bytes_per_s == 0) return false;
    return absl::Seconds(static_cast<double>(bytes) / p_.rate_bytes_per_s) <= MaxDowntime();
  }

  absl::Status SendRound(const std::vector<std::vector<uint64_t>>& pages, bool skip_zero) {
    absl::Time t0 = absl::Now();
    uint64_t b0 = s_.bytes_sent();
    RETURN_IF_ERROR(sender_.Send(pages, skip_zero, o_.mode == MigrationMode::kPostcopy));
    last_round_bytes_ = s_.bytes_sent() - b0;
    double secs = absl::ToDoubleSeconds(absl::Now() - t0);
    // Rounds too short to time say little; keep the last good figure.
    if (last_round_bytes_ >= (1 << 20) || p_.rate_bytes_per_s == 0) {
      p_.rate_bytes_per_s = static_cast<uint64_t>(last_round_bytes_ / std::max(secs, 1e-4));
    }
    if (uint64_t cap = Bandwidth()) p_.rate_bytes_per_s = std::min(p_.rate_bytes_per_s, cap);
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
    if (!c_.Commit()) return absl::CancelledError("cancelled before the switch-over");
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
                                                           : Bandwidth();
    RETURN_IF_ERROR(ServePostcopy(s_, vm_.memory(), std::move(last), cap, o_.peer_timeout,
                                  [this] { return c_.Commit(); }, on_go, on_progress));
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
  MigrationControl own_control_;  // when the options bring none
  MigrationControl& c_;
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
  // A cancel shows as whatever it interrupted (a read of a shut stream, say).
  if (m.cancelled() && !m.went()) {
    s = absl::CancelledError("the migration was cancelled; the VM runs on here");
  }
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
