// Live migration, both ends, over a migration::FrameStream (see
// docs/design/migration.md). The source sends RAM while the guest runs,
// round after round of the pages it dirtied, then stops it briefly for the
// rest and the device state; the destination loads RAM and state and runs
// the guest only after the source's GO.
//
// Source:
//   class Vm : public migration::MigrationSource { ... };   // the embedder's
//   RETURN_IF_ERROR(migration::Migrate(fd, vm, options, on_progress));
// Destination:
//   FrameStream s(fd);
//   ASSIGN_OR_RETURN(v1::MigrationHello hello, migration::ReceiveHello(s, deadline));
//   ... allocate RAM of hello.machine()'s shape ...
//   ASSIGN_OR_RETURN(IncomingState in, migration::ReceiveMemoryAndState(s, ram, timeout));
//   ... a post-copy (in.postcopy): PostcopyPager::Start ...
//   ... build the VM from `in.state` ...
//   RETURN_IF_ERROR(migration::FinishIncoming(s, timeout));   // DONE, then GO
#ifndef MIGRATION_PRECOPY_H_
#define MIGRATION_PRECOPY_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migration/migration_control.h"
#include "migration/postcopy.h"
#include "migration/snapshot.pb.h"
#include "migration/stream.h"
#include "vm-memory/guest_memory.h"

namespace migration {

namespace v1 = ::kindling::migration::v1;

// kPostcopy: after round 0 and `postcopy_after_rounds` rounds of dirtied
// pages (or sooner, once the rest would fit the downtime), the guest moves
// and the pages it still lacks follow on demand (postcopy.h).
enum class MigrationMode { kPrecopy, kAutoConverge, kPostcopy };
absl::StatusOr<MigrationMode> ParseMigrationMode(std::string_view name);

struct MigrationOptions {
  MigrationMode mode = MigrationMode::kPrecopy;
  uint64_t bandwidth_bytes_per_s = 0;  // 0: as fast as the link goes
  absl::Duration max_downtime = absl::Milliseconds(300);  // QEMU's default
  int max_rounds = 30;                 // pre-copy gives up after these
  int postcopy_after_rounds = 1;       // kPostcopy: dirty rounds before the switch
  // kPostcopy: the cap on the background push after the switch (QEMU's
  // max-postcopy-bandwidth); 0: bandwidth_bytes_per_s. Pages a fault asks
  // for go out at once regardless.
  uint64_t postcopy_bandwidth_bytes_per_s = 0;
  absl::Duration peer_timeout = absl::Seconds(60);
  // Optional: changes the migration while it runs (bandwidth, downtime,
  // an early post-copy, a cancel). Its setters' values, once set, win over
  // bandwidth_bytes_per_s and max_downtime above.
  MigrationControl* control = nullptr;
};

struct MigrationProgress {
  std::string phase;  // "precopy", "postcopy" (after the switch), "done"
  int round = 0;
  uint64_t pages_sent = 0;
  uint64_t bytes_sent = 0;
  uint64_t dirty_pages = 0;    // left after this round
  uint64_t rate_bytes_per_s = 0;
  int throttle_percent = 0;
  absl::Duration downtime;     // once the guest runs again (there): how long it stood
  uint64_t postcopy_requests = 0;  // pages the destination's faults asked for
  uint64_t postcopy_left = 0;      // pages the destination still lacks
};

// What the migration needs from the source VM; implemented by the embedder.
class MigrationSource {
 public:
  virtual ~MigrationSource() = default;
  virtual vm_memory::GuestMemory& memory() = 0;
  virtual const v1::Machine& machine() const = 0;
  // The machine's description for the HELLO (MigrationHello.skeleton),
  // taken while the guest runs.
  virtual absl::StatusOr<v1::Snapshot> DescribeMachine() = 0;
  // Dirty logging on (and the VMM's own dirty bits cleared) / off again.
  virtual absl::Status StartDirtyLog() = 0;
  virtual void StopDirtyLog() = 0;
  // Pages dirtied since the last call, per region of memory().regions():
  // one bit per 4 KiB page, the guest's (KVM) and the devices' ORed.
  virtual absl::StatusOr<std::vector<std::vector<uint64_t>>> TakeDirty() = 0;
  // Auto-converge: the share of time the vCPUs are kept from running.
  virtual void SetThrottle(int percent) = 0;
  // The switch-over: vCPUs stopped, devices at rest and held.
  virtual absl::Status Stop() = 0;
  virtual absl::StatusOr<v1::Snapshot> CaptureState() = 0;
  // Undoes Stop after a failure (the guest runs on here).
  virtual void Resume() = 0;
  // After GO: the guest now lives on the destination.
  virtual void Migrated() = 0;
};

// Runs a whole migration over the connected socket `fd`. Any error before
// GO leaves the source running as before (Resume, dirty logging off). A
// post-copy that fails after GO cannot do that (the guest ran on at the
// destination): the source stays stopped with its state intact, and the
// error says so (SourceStranded).
absl::Status Migrate(int fd, MigrationSource& vm, const MigrationOptions& options,
                     const std::function<void(const MigrationProgress&)>& progress);
bool SourceStranded(const absl::Status& s);

// Destination. ReceiveHello checks the version and the shape (bounded as
// ValidateSnapshot bounds a snapshot's) and answers nothing yet.
absl::StatusOr<v1::MigrationHello> ReceiveHello(FrameStream& s, absl::Time deadline);

// A source that connected and said HELLO (checked as ReceiveHello does).
struct IncomingSource {
  vm_memory::UniqueFd conn;
  v1::MigrationHello hello;
};
struct AcceptOptions {
  absl::Time deadline = absl::InfiniteFuture();
  // How long a connection may take to send its HELLO frame.
  absl::Duration hello_timeout = absl::Seconds(5);
  // Checked every 200 ms: true gives up (CANCELLED).
  std::function<bool()> stop;
  // Told about each connection that was not a source.
  std::function<void(const absl::Status&)> ignored;
};
// Waits on `listener` (migration::Listen) for a source. A connection that
// closes, sends anything but a HELLO frame, or nothing within
// hello_timeout is closed and passed to `ignored`: port scanners, health
// checks and "is anyone listening" probes do not end the wait. A HELLO
// that is not acceptable (version, shape) is an error, and the source is
// told why.
absl::StatusOr<IncomingSource> AcceptSource(int listener, const AcceptOptions& options);
// Sends READY, then loads pages into `memory` (every range checked against
// it) until STATE and END; returns the state and, for a post-copy, the
// pages still to come (hand them to a PostcopyPager before loading the
// state). `peer_timeout` bounds each wait for a frame.
struct IncomingState {
  v1::Snapshot state;
  std::optional<PageBitmap> postcopy;
};
absl::StatusOr<IncomingState> ReceiveMemoryAndState(FrameStream& s,
                                                    vm_memory::GuestMemory& memory,
                                                    absl::Duration peer_timeout);
// Sends DONE and waits for GO (a pre-copy; PostcopyPager::Finish otherwise).
absl::Status FinishIncoming(FrameStream& s, absl::Duration peer_timeout);

}  // namespace migration

#endif  // MIGRATION_PRECOPY_H_
