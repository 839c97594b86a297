// Changes a live migration while it runs, from any thread: the link cap and
// the downtime limit (QEMU's migrate-set-parameters), an early switch to
// post-copy (migrate-start-postcopy) and a cancel (migrate_cancel).
//
//   migration::MigrationControl control;
//   options.control = &control;
//   std::thread t([&] { status = migration::Migrate(fd, vm, options, progress); });
//   control.SetBandwidth(64 << 20);          // from an API thread, say
//   RETURN_IF_ERROR(control.Cancel());       // the source runs on
//
// One control serves one migration at a time; Migrate attaches itself on
// entry and detaches on return. Outside a migration every request but the
// setters is refused (FAILED_PRECONDITION), and the setters' values are
// kept for the next one.
#ifndef MIGRATION_MIGRATION_CONTROL_H_
#define MIGRATION_MIGRATION_CONTROL_H_

#include <cstdint>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace migration {

class MigrationControl {
 public:
  // The cap on the pages sent, from the next frame on; 0: as fast as the
  // link goes.
  void SetBandwidth(uint64_t bytes_per_s);
  // The longest the guest may stand still at the switch-over, from the
  // next round's end on.
  void SetMaxDowntime(absl::Duration limit);
  // A post-copy migration (MigrationMode::kPostcopy) switches over now:
  // the round being sent stops short and what it had left follows on
  // demand. Refused in other modes and once the switch-over began.
  absl::Status StartPostcopy();
  // Ends the migration before the guest is handed over: Migrate returns
  // CANCELLED and the source runs on as before. Refused once the
  // destination was told to run the guest (a post-copy after its
  // switch-over cannot be undone, as in QEMU). A wait for the peer ends
  // too: the stream's read side is shut down, and a send that the peer
  // does not take gives up within 100 ms.
  absl::Status Cancel();

  // What Migrate uses (not for embedders).
  struct Snapshot {
    std::optional<uint64_t> bandwidth;
    std::optional<absl::Duration> max_downtime;
    bool postcopy_now = false;
    bool cancelled = false;
  };
  Snapshot Read() const;
  void Attach(bool postcopy_mode, int fd);
  bool cancelled() const;
  // The switch-over has begun: no more early post-copy.
  void Switching();
  // Before GO: false if cancelled (nothing may run at the destination).
  bool Commit();
  void Detach();

 private:
  enum class Stage { kIdle, kPrecopy, kSwitching, kCommitted };
  mutable absl::Mutex mu_;
  Stage stage_ ABSL_GUARDED_BY(mu_) = Stage::kIdle;
  bool postcopy_mode_ ABSL_GUARDED_BY(mu_) = false;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;  // the stream, while attached
  Snapshot s_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migration

#endif  // MIGRATION_MIGRATION_CONTROL_H_
