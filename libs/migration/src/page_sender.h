// The source's page pump (internal to libs/migration): sends the pages a
// bitmap marks, in runs of up to kMaxPagesPerFrame, paced to the
// bandwidth a MigrationControl says at each frame, and stops when the
// control cancels or asks for post-copy now.
#ifndef MIGRATION_SRC_PAGE_SENDER_H_
#define MIGRATION_SRC_PAGE_SENDER_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "migration/migration_control.h"
#include "migration/postcopy.h"
#include "migration/stream.h"
#include "vm-memory/guest_memory.h"

namespace migration {

class PageSender {
 public:
  // `bandwidth`: the cap while the control sets none (0: none).
  PageSender(FrameStream& s, vm_memory::GuestMemory& mem, MigrationControl& control,
             uint64_t bandwidth);

  // Every page whose bit is set in bitmaps[i] (region i). Zero pages are
  // skipped when `skip_zero` (the destination's RAM is still zero there)
  // and sent as ZEROES otherwise. CANCELLED once the control cancels. When
  // `may_stop_short` and the control asks for post-copy, it stops at the
  // next 64-page boundary and stopped_short() holds what it left unsent.
  absl::Status Send(const PageBitmap& bitmaps, bool skip_zero, bool may_stop_short = false);
  uint64_t pages_sent() const { return pages_; }
  // After a Send that stopped short: the pages it did not send.
  const std::optional<PageBitmap>& stopped_short() const { return unsent_; }

 private:
  absl::Status SendRegion(size_t index, const PageBitmap& bitmaps, bool skip_zero);
  absl::Status Add(uint64_t gpa, const uint8_t* host, bool zero);
  absl::Status Flush();
  // Reads the control: a cancel, a new cap, a post-copy request.
  absl::Status Poll();
  absl::Status Pace();
  static PageBitmap Unsent(const PageBitmap& bitmaps, size_t region, size_t word);

  FrameStream& s_;
  vm_memory::GuestMemory& mem_;
  MigrationControl& control_;
  const uint64_t default_bandwidth_;
  uint64_t bandwidth_;
  absl::Time pace_start_;
  uint64_t pace_base_ = 0;  // bytes_sent() when pace_start_ was taken
  bool may_stop_short_ = false;
  bool stop_ = false;
  std::optional<PageBitmap> unsent_;
  uint64_t pages_ = 0;
  uint64_t run_gpa_ = 0, run_pages_ = 0;
  const uint8_t* run_host_ = nullptr;
  bool run_zero_ = false;
};

}  // namespace migration

#endif  // MIGRATION_SRC_PAGE_SENDER_H_
