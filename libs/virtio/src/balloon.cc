#include "virtio/balloon.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"

namespace virtio {
namespace {

// struct virtio_balloon_config up to poison_val (spec 5.5.4).
struct BalloonConfig {
  uint32_t num_pages;
  uint32_t actual;
  uint32_t free_page_hint_cmd_id;
  uint32_t poison_val;
};
constexpr uint64_t kActualOffset = offsetof(BalloonConfig, actual);

// struct virtio_balloon_stat (spec 5.5.6.3): packed, 10 bytes.
struct __attribute__((packed)) RawStat {
  uint16_t tag;
  uint64_t val;
};
static_assert(sizeof(RawStat) == 10);

}  // namespace

std::string BalloonStatName(uint16_t tag) {
  static constexpr const char* kNames[] = {
      "swap-in",     "swap-out",         "major-faults", "minor-faults",
      "free-memory", "total-memory",     "available-memory", "disk-caches",
      "hugetlb-allocations", "hugetlb-failures"};
  if (tag < sizeof(kNames) / sizeof(kNames[0])) return kNames[tag];
  return absl::StrCat("tag-", tag);
}

Balloon::Balloon(EventLoop& loop, BalloonOptions options) : loop_(loop), options_(options) {}

Balloon::~Balloon() {
  auto stop = [this] {
    *alive_ = false;
    timer_.reset();
  };
  if (loop_.InLoopThread() || loop_.stopped()) {
    stop();
  } else {
    loop_.RunSync(stop);
  }
}

uint64_t Balloon::features() const {
  uint64_t f = 0;
  if (options_.stats) f |= Bit(kBalloonFStatsVq);
  if (options_.deflate_on_oom) f |= Bit(kBalloonFDeflateOnOom);
  if (options_.free_page_reporting) f |= Bit(kBalloonFReporting);
  return f;
}

uint16_t Balloon::num_queues() const {
  return 2 + (options_.stats ? 1 : 0) + (options_.free_page_reporting ? 1 : 0);
}

void Balloon::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  BalloonConfig c = {num_pages_.load(), actual_.load(), 0, 0};
  CopyConfig({reinterpret_cast<const uint8_t*>(&c), sizeof(c)}, offset, data);
}

void Balloon::WriteConfig(uint64_t offset, std::span<const uint8_t> data) {
  // Only `actual` is the driver's to write; any byte of it, any width.
  uint32_t actual = actual_.load();
  auto* bytes = reinterpret_cast<uint8_t*>(&actual);
  bool changed = false;
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t at = offset + i;
    if (at < offset || at < kActualOffset || at >= kActualOffset + 4) continue;
    bytes[at - kActualOffset] = data[i];
    changed = true;
  }
  if (changed) actual_.store(actual);
}

void Balloon::OnLoop(std::function<void()> fn) {
  loop_.Post([alive = alive_, fn = std::move(fn)] {
    if (*alive) fn();
  });
}

void Balloon::SetTarget(uint64_t mib) {
  uint64_t pages = std::min<uint64_t>(mib, UINT32_MAX / 256 + 1) * 256;
  num_pages_.store(static_cast<uint32_t>(std::min<uint64_t>(pages, UINT32_MAX)));
  OnLoop([this] {
    if (active_ && ctx_.config_changed) ctx_.config_changed();
  });
}

void Balloon::RequestStats() {
  OnLoop([this] {
    absl::Status s = ReturnStatsBuffer();
    if (!s.ok()) absl::FPrintF(stderr, "kindling: %s: stats: %s\n", name(), s.message());
  });
}

std::vector<BalloonStat> Balloon::stats() const {
  absl::MutexLock l(&mu_);
  std::vector<BalloonStat> out;
  for (const auto& [tag, val] : stats_) out.push_back({tag, val});
  return out;
}

BalloonCounters Balloon::counters() const {
  absl::MutexLock l(&mu_);
  return {inflated_.load(), deflated_.load(), skipped_.load(), reported_.load(), stats_updates_};
}

absl::Status Balloon::Activate(const ActivateContext& ctx) {
  ctx_ = ctx;
  // The driver numbers the optional queues it acked consecutively.
  uint64_t acked = ctx.features & features();
  uint16_t next = 2;
  stats_queue_.reset();
  reporting_queue_.reset();
  if (acked & Bit(kBalloonFStatsVq)) stats_queue_ = next++;
  if (acked & Bit(kBalloonFReporting)) reporting_queue_ = next++;
  if (ctx.queues.size() < next) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the acked features need ", next, " queues, the transport has ", ctx.queues.size()));
  }
  active_ = true;
  if (stats_queue_ && options_.stats_interval_s > 0) {
    timer_ = std::make_unique<boost::asio::steady_timer>(loop_.context());
    ArmTimer();
  }
  return absl::OkStatus();
}

void Balloon::Reset() {
  active_ = false;
  ctx_ = {};
  stats_head_.reset();
  timer_.reset();  // a wakeup already queued finds no timer and stops
}

void Balloon::ArmTimer() {
  timer_->expires_after(std::chrono::seconds(options_.stats_interval_s));
  timer_->async_wait(
      [this, alive = alive_, timer = timer_.get()](const boost::system::error_code& ec) {
        if (!*alive || ec || timer_.get() != timer) return;  // stopped or reset
        RequestStats();
        ArmTimer();
      });
}

absl::Status Balloon::ProcessQueue(uint16_t index) {
  if (!active_) return absl::OkStatus();
  if (index == kInflateQueue || index == kDeflateQueue) return InflateOrDeflate(index);
  if (index == stats_queue_) return ReceiveStats();
  if (index == reporting_queue_) return Report();
  return absl::OkStatus();  // a queue the acked features do not use
}

absl::Status Balloon::InflateOrDeflate(uint16_t index) {
  std::vector<uint32_t> pfns;
  return ServeQueue(ctx_, index, [&](const DescriptorChain& chain) -> absl::StatusOr<uint32_t> {
    uint64_t len = chain.readable_bytes;
    if (len % 4 != 0 || len / 4 > kMaxPfnsPerChain) {
      return absl::InvalidArgumentError(
          absl::StrCat(index == kInflateQueue ? "inflate" : "deflate", " request of ", len,
                       " bytes is not a list of at most ", kMaxPfnsPerChain, " 32-bit PFNs"));
    }
    pfns.resize(len / 4);
    ChainReader r(*ctx_.memory, chain);
    RETURN_IF_ERROR(r.Read({reinterpret_cast<uint8_t*>(pfns.data()), len}));
    if (index == kInflateQueue) {
      ReleasePfns(pfns);
    } else {
      deflated_.fetch_add(pfns.size());  // the pages are the guest's again
    }
    return 0;
  });
}

void Balloon::ReleasePfns(std::vector<uint32_t>& pfns) {
  std::sort(pfns.begin(), pfns.end());
  pfns.erase(std::unique(pfns.begin(), pfns.end()), pfns.end());
  GuestMemory& mem = *ctx_.memory;
  for (size_t i = 0; i < pfns.size();) {
    size_t j = i + 1;
    while (j < pfns.size() && pfns[j] == pfns[j - 1] + 1) ++j;  // a contiguous run
    GuestAddress start(uint64_t{pfns[i]} * kPageSize);
    uint64_t len = (j - i) * kPageSize;
    if (mem.CheckRange(start, len) && mem.ZeroRange(start, len).ok()) {
      inflated_.fetch_add(j - i);
    } else {
      // Part of the run is not RAM: page by page, skipping the holes.
      for (size_t k = i; k < j; ++k) {
        GuestAddress page(uint64_t{pfns[k]} * kPageSize);
        if (mem.CheckRange(page, kPageSize) && mem.ZeroRange(page, kPageSize).ok()) {
          inflated_.fetch_add(1);
        } else {
          skipped_.fetch_add(1);
        }
      }
    }
    i = j;
  }
}

absl::Status Balloon::ReceiveStats() {
  Queue& q = ctx_.queues[*stats_queue_];
  return ServeQueue(ctx_, *stats_queue_,
                    [&](const DescriptorChain& chain) -> absl::StatusOr<uint32_t> {
                      uint64_t len = chain.readable_bytes;
                      if (len % sizeof(RawStat) != 0 || len / sizeof(RawStat) > kMaxStats) {
                        return absl::InvalidArgumentError(
                            absl::StrCat("stats buffer of ", len, " bytes is not at most ",
                                         kMaxStats, " 10-byte entries"));
                      }
                      std::vector<RawStat> raw(len / sizeof(RawStat));
                      ChainReader r(*ctx_.memory, chain);
                      RETURN_IF_ERROR(r.Read({reinterpret_cast<uint8_t*>(raw.data()), len}));
                      {
                        absl::MutexLock l(&mu_);
                        for (const RawStat& s : raw) stats_[s.tag] = s.val;
                        ++stats_updates_;
                      }
                      if (options_.on_stats) options_.on_stats(stats());
                      // The driver keeps one buffer with us; a second one
                      // means it gave up on the first, which goes back.
                      if (stats_head_) RETURN_IF_ERROR(q.PushUsed(*stats_head_, 0));
                      stats_head_ = chain.head;
                      return kKeepChain;
                    });
}

absl::StatusOr<bool> Balloon::Quiesce() {
  RETURN_IF_ERROR(ReturnStatsBuffer());
  return true;
}

absl::Status Balloon::ReturnStatsBuffer() {
  if (!active_ || !stats_queue_ || !stats_head_) return absl::OkStatus();
  Queue& q = ctx_.queues[*stats_queue_];
  RETURN_IF_ERROR(q.PushUsed(*stats_head_, 0));
  stats_head_.reset();
  if (q.NeedsInterrupt()) ctx_.interrupt->SignalQueue(*stats_queue_);
  return absl::OkStatus();
}

absl::Status Balloon::Report() {
  return ServeQueue(ctx_, *reporting_queue_,
                    [this](const DescriptorChain& chain) -> absl::StatusOr<uint32_t> {
                      // Each buffer is a free range (the queue checked it lies in RAM).
                      for (const Buffer& b : chain.buffers) {
                        if (b.len == 0) continue;
                        absl::Status s = ctx_.memory->ZeroRange(b.addr, b.len);
                        if (!s.ok()) {
                          return absl::Status(s.code(), absl::StrCat("releasing a reported range: ",
                                                                     s.message()));
                        }
                        reported_.fetch_add(b.len);
                      }
                      return 0;
                    });
}

}  // namespace virtio
