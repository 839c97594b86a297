// The live-migration stream: frames over a connected stream socket (unix
// or TCP). A frame is a 4-byte little-endian length (type byte + payload),
// the type, the payload. The peer is untrusted: every length is bounded
// before anything is read or allocated, unknown types are refused, and a
// read or write that does not finish by the deadline is an error.
//
//   FrameStream s(fd);
//   RETURN_IF_ERROR(s.Send(FrameType::kEnd, {}));
//   ASSIGN_OR_RETURN(Frame f, s.Receive(absl::Now() + absl::Seconds(30)));
#ifndef MIGRATION_STREAM_H_
#define MIGRATION_STREAM_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace migration {

enum class FrameType : uint8_t {
  // Source -> destination.
  kHello = 1,   // MigrationHello
  kPages = 2,   // u64 guest address, then whole 4 KiB pages
  kZeroes = 3,  // u64 guest address, u64 length: pages that became zero
  kState = 4,   // Snapshot, without a memory manifest
  kEnd = 5,     // nothing more follows
  kGo = 6,      // the destination may run the guest
  kPostcopy = 7,     // before STATE: the pages the destination lacks (postcopy.h)
  kPostcopyEnd = 8,  // post-copy: every missing page has been sent
  // Destination -> source.
  kReady = 16,  // RAM allocated: send pages
  kDone = 17,   // state loaded: waiting for kGo
  kError = 18,  // text: why the destination gave up
  kPageRequest = 19,  // post-copy: u64 guest address of a page a fault needs
};

inline constexpr uint64_t kStreamPage = 4096;
inline constexpr size_t kMaxPagesPerFrame = 256;
inline constexpr size_t kMaxFramePayload = 16 << 20;  // the state frame's bound
inline constexpr uint32_t kStreamVersion = 1;

struct Frame {
  FrameType type;
  std::string payload;
};

const char* FrameTypeName(FrameType t);

class FrameStream {
 public:
  explicit FrameStream(int fd) : fd_(fd) {}  // fd is not owned
  // Sends one frame whose payload is `head` then `body` (gathered).
  absl::Status Send(FrameType type, std::span<const uint8_t> head,
                    std::span<const uint8_t> body = {});
  absl::Status SendText(FrameType type, std::string_view text);
  // The next frame; DEADLINE_EXCEEDED if it has not fully arrived by then.
  absl::StatusOr<Frame> Receive(absl::Time deadline);
  // The next frame, which must be `want` (a kError from the peer becomes
  // an error carrying its text).
  absl::StatusOr<Frame> Expect(FrameType want, absl::Time deadline);
  int fd() const { return fd_; }
  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }
  // Sends give up when the peer takes no data for `stall` (DEADLINE_EXCEEDED),
  // or once `cancelled` says so (CANCELLED, read every 100 ms while the
  // peer takes nothing). By default a send waits for the peer as long as
  // it takes.
  void SetSendLimits(absl::Duration stall, std::function<bool()> cancelled);

 private:
  absl::Status ReadFull(uint8_t* p, size_t n, absl::Time deadline);
  // Waits until the socket takes data (see SetSendLimits).
  absl::Status WaitWritable(FrameType type);
  int fd_;
  absl::Duration stall_ = absl::InfiniteDuration();
  std::function<bool()> cancelled_;
  uint64_t bytes_sent_ = 0;
  uint64_t bytes_received_ = 0;
};

}  // namespace migration

#endif  // MIGRATION_STREAM_H_
