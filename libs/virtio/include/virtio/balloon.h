// Balloon: virtio-balloon (virtio 1.2, 5.5), the traditional balloon plus
// the statistics queue and free page reporting.
//
// The host sets a target with SetTarget; the guest inflates (hands pages
// back: their memory is released with GuestMemory::ZeroRange, a hole
// punched in the memfd, so they read as zeros afterwards) or deflates
// (takes pages back: nothing to do but count) and reports `actual` in the
// config space. Free page reporting releases each reported range the same
// way. Statistics: the device keeps the driver's latest buffer and returns
// it when it wants new numbers (RequestStats, or every
// stats_interval_s seconds).
//
//   auto balloon = std::make_shared<Balloon>(loop, BalloonOptions{.stats_interval_s = 5});
//   ... MmioTransport(balloon, mem, loop, irq) ...
//   balloon->SetTarget(512);                     // MiB the guest should give back
//   uint32_t pages = balloon->actual_pages();    // what it has given so far
//   for (BalloonStat s : balloon->stats()) ...
//
// Guest faults: a PFN outside RAM is skipped and counted, not fatal; a
// PFN list whose length is not a multiple of 4 or longer than
// kMaxPfnsPerChain, or a stats buffer that is not whole 10-byte entries
// (or more than kMaxStats of them), is a broken request: ProcessQueue
// returns an error and the transport sets DEVICE_NEEDS_RESET.
#ifndef VIRTIO_BALLOON_H_
#define VIRTIO_BALLOON_H_

#include <atomic>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "virtio/device.h"
#include "virtio/event_loop.h"

namespace virtio {

// Feature bits (spec 5.5.3).
inline constexpr int kBalloonFStatsVq = 1;
inline constexpr int kBalloonFDeflateOnOom = 2;
inline constexpr int kBalloonFReporting = 5;

// Statistic tags (spec 5.5.6.3).
inline constexpr uint16_t kBalloonSSwapIn = 0;
inline constexpr uint16_t kBalloonSSwapOut = 1;
inline constexpr uint16_t kBalloonSMajFlt = 2;
inline constexpr uint16_t kBalloonSMinFlt = 3;
inline constexpr uint16_t kBalloonSMemFree = 4;
inline constexpr uint16_t kBalloonSMemTot = 5;
inline constexpr uint16_t kBalloonSAvail = 6;
inline constexpr uint16_t kBalloonSCaches = 7;

struct BalloonStat {
  uint16_t tag;
  uint64_t val;
};

// The spec's name for a statistics tag (5.5.6.3: "swap-in", "free-memory",
// ...), or "tag-N" for one it does not define.
std::string BalloonStatName(uint16_t tag);

struct BalloonOptions {
  bool deflate_on_oom = false;
  bool stats = true;                // offer STATS_VQ
  uint32_t stats_interval_s = 0;    // 0: only on RequestStats
  bool free_page_reporting = true;  // offer REPORTING
  // Called on the loop thread with every stats buffer the driver sends.
  std::function<void(const std::vector<BalloonStat>&)> on_stats;
};

// What a snapshot keeps of the balloon besides its transport: the target
// the host set and what the driver reported in `actual`.
struct BalloonState {
  uint32_t target_pages = 0;
  uint32_t actual_pages = 0;
};

struct BalloonCounters {
  uint64_t inflated_pages = 0;
  uint64_t deflated_pages = 0;
  uint64_t skipped_pfns = 0;    // outside guest RAM
  uint64_t reported_bytes = 0;  // free page reporting
  uint64_t stats_updates = 0;   // stats buffers received
};

class Balloon : public VirtioDevice {
 public:
  static constexpr uint64_t kPageSize = 4096;         // balloon PFNs are 4 KiB
  static constexpr uint32_t kMaxPfnsPerChain = 4096;  // Linux sends <= 256
  static constexpr uint32_t kMaxStats = 64;           // spec defines 16 tags
  static constexpr uint16_t kInflateQueue = 0;
  static constexpr uint16_t kDeflateQueue = 1;

  // `loop` is the loop the transport runs this device on; destroy the
  // device before the loop.
  Balloon(EventLoop& loop, BalloonOptions options);
  ~Balloon() override;

  DeviceType type() const override { return DeviceType::kBalloon; }
  std::string name() const override { return "virtio-balloon"; }
  uint64_t features() const override;
  // inflate, deflate, then stats and reporting when offered; the driver
  // numbers the ones it acked consecutively (statsq only if STATS_VQ...).
  uint16_t num_queues() const override;
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override;
  absl::Status Activate(const ActivateContext& ctx) override;
  absl::Status ProcessQueue(uint16_t index) override;
  void Reset() override;
  // Gives the held statistics buffer back (the driver refills it).
  absl::StatusOr<bool> Quiesce() override;
  BalloonState SaveState() const { return {num_pages_.load(), actual_.load()}; }
  // Before the transport's restore (no configuration interrupt).
  void RestoreState(const BalloonState& state) {
    num_pages_.store(state.target_pages);
    actual_.store(state.actual_pages);
  }

  // ---- host side, any thread ----
  // Asks the guest to give back `mib` MiB (num_pages = mib * 256, at most
  // UINT32_MAX pages) and raises a configuration interrupt.
  void SetTarget(uint64_t mib);
  uint32_t target_pages() const { return num_pages_.load(); }
  // Pages the guest says it has given back (config `actual`).
  uint32_t actual_pages() const { return actual_.load(); }
  // Returns the held stats buffer so the driver refills it.
  void RequestStats();
  // The latest statistics the driver reported, by tag.
  std::vector<BalloonStat> stats() const;
  BalloonCounters counters() const;

 private:
  absl::Status InflateOrDeflate(uint16_t index);
  absl::Status ReceiveStats();
  absl::Status Report();
  absl::Status ReturnStatsBuffer();
  void ReleasePfns(std::vector<uint32_t>& pfns);
  void ArmTimer();
  void OnLoop(std::function<void()> fn);  // posts, unless the device is gone

  EventLoop& loop_;
  BalloonOptions options_;
  ActivateContext ctx_;                  // loop thread
  bool active_ = false;                  // loop thread
  std::optional<uint16_t> stats_queue_;  // from the acked features
  std::optional<uint16_t> reporting_queue_;
  std::optional<uint16_t> stats_head_;                // the buffer the device holds
  std::unique_ptr<boost::asio::steady_timer> timer_;  // loop thread
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

  std::atomic<uint32_t> num_pages_{0};
  std::atomic<uint32_t> actual_{0};
  std::atomic<uint64_t> inflated_{0}, deflated_{0}, skipped_{0}, reported_{0};
  mutable absl::Mutex mu_;
  std::map<uint16_t, uint64_t> stats_ ABSL_GUARDED_BY(mu_);
  uint64_t stats_updates_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace virtio

#endif  // VIRTIO_BALLOON_H_
