// The private protocol between the daemon (kindling-ctl serve) and one VM
// process (kindling vm-process), over a SOCK_SEQPACKET Unix socket: one
// packet is one message, so there is no framing to get wrong.
//
//   packet  = type:u8 seq:u32le payload
//   commands (daemon -> VM): seq > 0; the VM answers each with kReply{seq}
//   events   (VM -> daemon): seq = 0, any time
//
// Order: the VM process sends everything on one ordered stream, so the
// state change a command causes arrives before that command's reply, and
// console bytes before the state change that follows them.
//
// Both sides treat the other as untrusted (a guest that escaped into the
// VM process must not take the daemon with it): every decoder bounds what
// it reads and returns an error naming what was wrong.
//
//   std::string pkt = control::Encode({control::Type::kStart, 7, ""});
//   ASSIGN_OR_RETURN(control::Message m, control::Decode(pkt));
#ifndef KINDLING_LAUNCHER_CONTROL_WIRE_H_
#define KINDLING_LAUNCHER_CONTROL_WIRE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kindling::control {

// The largest packet either side sends or accepts.
inline constexpr size_t kMaxPacket = 64 * 1024;
inline constexpr size_t kHeader = 5;
inline constexpr size_t kMaxPayload = kMaxPacket - kHeader;

enum class Type : uint8_t {
  // Commands.
  kStart = 1,
  kPause = 2,
  kResume = 3,
  kKill = 4,          // stop the guest now (exit status 137)
  kPowerButton = 5,   // ask the guest to power off
  kConsoleInput = 6,  // payload: bytes for the guest console
  kGetStats = 7,      // reply payload: EncodeCounters
  kQuit = 8,          // kill the guest if it runs, then end the process
  kSnapshot = 9,      // payload: EncodeSnapshotRequest
  kMigrate = 10,      // payload: EncodeMigrateRequest
  kScreenshot = 11,   // payload: a file name (CheckScreenshotName) the VM process
                      // writes a PNG to in its directory; reply payload:
                      // EncodeCounters (width, height, bytes)
  kMigrateSet = 12,   // payload: EncodeMigrateSetRequest; answered while
                      // kMigrate runs (the only command that is)
  // Events and replies.
  kReply = 0x80,          // payload: EncodeReply
  kState = 0x81,          // payload: EncodeState
  kConsoleOutput = 0x82,  // payload: console bytes
  kConsoleReplay = 0x83,  // payload: console bytes printed before this connection
  kDeviceNeedsReset = 0x84,  // payload: EncodeDeviceReset
  kBalloonStats = 0x85,      // payload: EncodeCounters (stat name -> value)
  kMigrationProgress = 0x86, // payload: EncodeCounters (see MigrationProgress)
};

struct Message {
  Type type = Type::kReply;
  uint32_t seq = 0;
  std::string payload;
};

std::string Encode(const Message& m);
absl::StatusOr<Message> Decode(std::string_view packet);
bool IsCommand(Type t);

// The VM's state as the VM process sees it (values match kindling.v1.VmState).
enum class VmState : uint8_t {
  kCreated = 1,
  kRunning = 2,
  kPaused = 3,
  kStopped = 4,
  kFailed = 5,
  kIncoming = 6,  // waiting for a live migration's source
};

struct StateEvent {
  VmState state = VmState::kCreated;
  int32_t exit_code = 0;  // meaningful once kStopped
  std::string detail;     // why it stopped or failed
};

std::string EncodeState(const StateEvent& s);
absl::StatusOr<StateEvent> DecodeState(std::string_view payload);

// A command's result: an absl status code and its message.
std::string EncodeReply(const absl::Status& s, std::string_view body = {});
struct Reply {
  absl::Status status;
  std::string body;
};
absl::StatusOr<Reply> DecodeReply(std::string_view payload);

// A device that entered DEVICE_NEEDS_RESET: u16le name length, name, reason.
struct DeviceReset {
  std::string device;
  std::string reason;
};
std::string EncodeDeviceReset(const DeviceReset& d);
absl::StatusOr<DeviceReset> DecodeDeviceReset(std::string_view payload);

// A snapshot command: u8 flags (bit 0: stay paused, bit 1: diff), then the
// directory (absolute, 1 to 4096 bytes, no NUL).
struct SnapshotRequest {
  std::string directory;
  bool stay_paused = false;
  bool diff = false;  // only the pages dirtied since this VM's last snapshot
};
std::string EncodeSnapshotRequest(const SnapshotRequest& r);
absl::StatusOr<SnapshotRequest> DecodeSnapshotRequest(std::string_view payload);

// A live migration: u8 mode (0 precopy, 1 auto-converge, 2 postcopy), u32le downtime
// limit in ms (1 to 60000), u32le bandwidth in MiB/s (0: unlimited), u8
// the rounds of dirtied pages before a post-copy's switch-over (0 to
// kMaxPostcopyAfterRounds), then the destination address (unix:PATH or
// tcp:HOST:PORT, 1 to 4096 bytes).
inline constexpr uint32_t kMaxPostcopyAfterRounds = 30;  // MigrationOptions::max_rounds
struct MigrateRequest {
  std::string destination;
  uint8_t mode = 0;
  uint32_t max_downtime_ms = 300;
  uint32_t bandwidth_mibps = 0;
  uint8_t postcopy_after_rounds = 1;
};
std::string EncodeMigrateRequest(const MigrateRequest& r);
absl::StatusOr<MigrateRequest> DecodeMigrateRequest(std::string_view payload);

// A change to the migration that runs: u8 what (bit 0: the bandwidth cap,
// bit 1: the downtime limit, bit 2: switch to post-copy now, bit 3:
// cancel; at least one), u32le downtime limit in ms (1 to 60000, with bit
// 1), u32le bandwidth in MiB/s (0: unlimited, at most 1048576, with bit 0).
struct MigrateSetRequest {
  std::optional<uint32_t> bandwidth_mibps;
  std::optional<uint32_t> max_downtime_ms;
  bool start_postcopy = false;
  bool cancel = false;
};
std::string EncodeMigrateSetRequest(const MigrateSetRequest& r);
absl::StatusOr<MigrateSetRequest> DecodeMigrateSetRequest(std::string_view payload);

// A screenshot's file name: "screenshot-" then 1 to 32 of [0-9a-f], then
// ".png" (no path can hide in it).
absl::Status CheckScreenshotName(std::string_view name);

// name/value counters: u16le name length, name, u64le value; repeated.
using Counters = std::vector<std::pair<std::string, uint64_t>>;
std::string EncodeCounters(const Counters& c);
absl::StatusOr<Counters> DecodeCounters(std::string_view payload);

}  // namespace kindling::control

#endif  // KINDLING_LAUNCHER_CONTROL_WIRE_H_
