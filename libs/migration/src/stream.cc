#include "migration/stream.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"

namespace migration {
namespace {

bool KnownType(uint8_t t) {
  return (t >= static_cast<uint8_t>(FrameType::kHello) &&
          t <= static_cast<uint8_t>(FrameType::kPostcopyEnd)) ||
         (t >= static_cast<uint8_t>(FrameType::kReady) &&
          t <= static_cast<uint8_t>(FrameType::kPageRequest));
}

// The most a frame of each type may carry.
size_t MaxPayload(FrameType t) {
  switch (t) {
    case FrameType::kPages: return 8 + kMaxPagesPerFrame * kStreamPage;
    case FrameType::kZeroes: return 16;
    case FrameType::kEnd:
    case FrameType::kGo:
    case FrameType::kReady:
    case FrameType::kDone:
    case FrameType::kPostcopyEnd: return 0;
    case FrameType::kPageRequest: return 8;
    case FrameType::kError: return 4096;
    case FrameType::kHello: return 64 << 10;
    case FrameType::kState:
    case FrameType::kPostcopy: return kMaxFramePayload;
  }
  return 0;
}

}  // namespace

const char* FrameTypeName(FrameType t) {
  switch (t) {
    case FrameType::kHello: return "HELLO";
    case FrameType::kPages: return "PAGES";
    case FrameType::kZeroes: return "ZEROES";
    case FrameType::kState: return "STATE";
    case FrameType::kEnd: return "END";
    case FrameType::kGo: return "GO";
    case FrameType::kReady: return "READY";
    case FrameType::kDone: return "DONE";
    case FrameType::kError: return "ERROR";
    case FrameType::kPostcopy: return "POSTCOPY";
    case FrameType::kPostcopyEnd: return "POSTCOPY_END";
    case FrameType::kPageRequest: return "PAGE_REQUEST";
  }
  return "?";
}

absl::Status FrameStream::Send(FrameType type, std::span<const uint8_t> head,
                               std::span<const uint8_t> body) {
  uint8_t hdr[5];
  uint32_t len = static_cast<uint32_t>(1 + head.size() + body.size());
  std::memcpy(hdr, &len, 4);  // x86: little-endian
  hdr[4] = static_cast<uint8_t>(type);
  iovec iov[3] = {{hdr, 5},
                  {const_cast<uint8_t*>(head.data()), head.size()},
                  {const_cast<uint8_t*>(body.data()), body.size()}};
  int n = 3;
  iovec* v = iov;
  while (n > 0) {
    msghdr msg = {};
    msg.msg_iov = v;
    msg.msg_iovlen = n;
    ssize_t w = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        RETURN_IF_ERROR(WaitWritable(type));
        continue;
      }
      return absl::ErrnoToStatus(errno, absl::StrCat("sending ", FrameTypeName(type)));
    }
    bytes_sent_ += w;
    while (n > 0 && static_cast<size_t>(w) >= v->iov_len) {
      w -= v->iov_len;
      ++v;
      --n;
    }
    if (n > 0) {
      v->iov_base = static_cast<uint8_t*>(v->iov_base) + w;
      v->iov_len -= w;
    }
  }
  return absl::OkStatus();
}

void FrameStream::SetSendLimits(absl::Duration stall, std::function<bool()> cancelled) {
  stall_ = stall;
  cancelled_ = std::move(cancelled);
}

absl::Status FrameStream::WaitWritable(FrameType type) {
  const absl::Time give_up = absl::Now() + stall_;
  for (;;) {
    if (cancelled_ && cancelled_()) return absl::CancelledError("the migration was cancelled");
    if (absl::Now() >= give_up) {
      return absl::DeadlineExceededError(absl::StrCat("sending ", FrameTypeName(type),
                                                      ": the peer took no data for ",
                                                      absl::FormatDuration(stall_)));
    }
    pollfd pfd = {fd_, POLLOUT, 0};
    int r = ::poll(&pfd, 1, 100);
    if (r < 0 && errno != EINTR) return absl::ErrnoToStatus(errno, "poll");
    if (r > 0) return absl::OkStatus();  // writable, or an error sendmsg reports
  }
}

absl::Status FrameStream::SendText(FrameType type, std::string_view text) {
  text = text.substr(0, MaxPayload(type));
  return Send(type, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

absl::Status FrameStream::ReadFull(uint8_t* p, size_t n, absl::Time deadline) {
  while (n > 0) {
    int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) return absl::DeadlineExceededError("the peer sent nothing in time");
    pollfd pfd = {fd_, POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(ms, 1000)));
    if (r < 0 && errno != EINTR) return absl::ErrnoToStatus(errno, "poll");
    if (r <= 0) continue;
    ssize_t got = ::read(fd_, p, n);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return absl::ErrnoToStatus(errno, "reading the migration stream");
    }
    if (got == 0) return absl::UnavailableError("the peer closed the migration stream");
    p += got;
    n -= got;
    bytes_received_ += got;
  }
  return absl::OkStatus();
}

absl::StatusOr<Frame> FrameStream::Receive(absl::Time deadline) {
  uint8_t hdr[5];
  RETURN_IF_ERROR(ReadFull(hdr, 5, deadline));
  uint32_t len;
  std::memcpy(&len, hdr, 4);
  if (!KnownType(hdr[4])) {
    return absl::InvalidArgumentError(
        absl::StrCat("migration stream: unknown frame type ", static_cast<int>(hdr[4])));
  }
  Frame f{static_cast<FrameType>(hdr[4]), {}};
  if (len == 0 || len - 1 > MaxPayload(f.type)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "migration stream: a ", FrameTypeName(f.type), " frame of ", len,
        " bytes (at most ", MaxPayload(f.type) + 1, ")"));
  }
  f.payload.resize(len - 1);
  RETURN_IF_ERROR(ReadFull(reinterpret_cast<uint8_t*>(f.payload.data()), len - 1, deadline));
  return f;
}

absl::StatusOr<Frame> FrameStream::Expect(FrameType want, absl::Time deadline) {
  ASSIGN_OR_RETURN(Frame f, Receive(deadline));
  if (f.type == FrameType::kError && want != FrameType::kError) {
    return absl::AbortedError(absl::StrCat("the peer gave up: ", f.payload));
  }
  if (f.type != want) {
    return absl::InvalidArgumentError(absl::StrCat("migration stream: expected ",
                                                   FrameTypeName(want), ", got ",
                                                   FrameTypeName(f.type)));
  }
  return f;
}

}  // namespace migration
