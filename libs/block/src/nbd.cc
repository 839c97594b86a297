// NBD client. Protocol facts from NetworkBlockDevice doc/proto.md.
#include "block/nbd.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "kindling/status_macros.h"
#include "libs/block/src/endian.h"

namespace block {

using internal::LoadBe16;
using internal::LoadBe32;
using internal::LoadBe64;
using internal::StoreBe16;
using internal::StoreBe32;
using internal::StoreBe64;

namespace {

constexpr uint64_t kNbdMagic = 0x4e42444d41474943ULL;     // "NBDMAGIC"
constexpr uint64_t kOptMagic = 0x49484156454f5054ULL;     // "IHAVEOPT"
constexpr uint64_t kRepMagic = 0x3e889045565a9ULL;
constexpr uint32_t kRequestMagic = 0x25609513;
constexpr uint32_t kSimpleReplyMagic = 0x67446698;
constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;

constexpr uint16_t kFlagFixedNewstyle = 1, kFlagNoZeroes = 2;
constexpr uint32_t kOptExportName = 1, kOptAbort = 2, kOptGo = 7, kOptStructuredReply = 8;
constexpr uint32_t kRepAck = 1, kRepInfo = 3;
constexpr uint32_t kRepErrUnsup = 0x80000001;
constexpr uint16_t kInfoExport = 0, kInfoBlockSize = 3;

constexpr uint16_t kCmdRead = 0, kCmdWrite = 1, kCmdDisc = 2, kCmdFlush = 3,
                   kCmdTrim = 4, kCmdWriteZeroes = 6;
constexpr uint16_t kTFlagReadOnly = 2, kTFlagSendFlush = 4, kTFlagSendTrim = 32,
                   kTFlagSendWriteZeroes = 64;
constexpr uint16_t kReplyFlagDone = 1;
constexpr uint16_t kReplyOffsetData = 1, kReplyOffsetHole = 2;

constexpr uint32_t kMaxOptionReply = 64 << 10;

absl::StatusCode CodeForNbdError(uint32_t e) {
  switch (e) {
    case 1: return absl::StatusCode::kPermissionDenied;
    case 12: return absl::StatusCode::kResourceExhausted;
    case 22: return absl::StatusCode::kInvalidArgument;
    case 28: return absl::StatusCode::kResourceExhausted;
    case 75: return absl::StatusCode::kOutOfRange;
    case 95: return absl::StatusCode::kUnimplemented;
    case 108: return absl::StatusCode::kUnavailable;
    default: return absl::StatusCode::kInternal;
  }
}

const char* CmdName(uint16_t t) {
  switch (t) {
    case kCmdRead: return "read";
    case kCmdWrite: return "write";
    case kCmdFlush: return "flush";
    case kCmdTrim: return "trim";
    case kCmdWriteZeroes: return "write-zeroes";
    default: return "command";
  }
}

absl::StatusOr<int> ConnectUnix(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) {
    return absl::InvalidArgumentError("unix socket path too long: " + path);
  }
  memcpy(sa.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(strerror(errno));
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrFormat("connect(%s): %s", path, strerror(err)));
  }
  return fd;
}

absl::StatusOr<int> ConnectTcp(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int r = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (r != 0) {
    return absl::UnavailableError(absl::StrFormat("%s:%s: %s", host, port, gai_strerror(r)));
  }
  int fd = -1, err = 0;
  for (addrinfo* a = res; a; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    err = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrFormat("connect(%s:%s): %s", host, port, strerror(err)));
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NbdImage>> NbdImage::Connect(const std::string& address,
                                                            const NbdOptions& o) {
  std::string export_name, socket_path, host, port = "10809";
  if (absl::StartsWith(address, "nbd+unix://")) {
    std::string rest = address.substr(strlen("nbd+unix://"));
    size_t q = rest.find("?socket=");
    if (q == std::string::npos) return absl::InvalidArgumentError("nbd+unix URI needs ?socket=");
    socket_path = rest.substr(q + 8);
    export_name = rest.substr(0, q);
    if (absl::StartsWith(export_name, "/")) export_name = export_name.substr(1);
  } else if (absl::StartsWith(address, "nbd://")) {
    std::string rest = address.substr(6);
    size_t slash = rest.find('/');
    std::string hp = rest.substr(0, slash);
    if (slash != std::string::npos) export_name = rest.substr(slash + 1);
    size_t colon = hp.rfind(':');
    host = hp.substr(0, colon);
    if (colon != std::string::npos) port = hp.substr(colon + 1);
  } else if (absl::StartsWith(address, "nbd:")) {
    std::vector<std::string> parts = absl::StrSplit(address.substr(4), ':');
    for (size_t i = 0; i < parts.size(); ++i) {
      if (absl::StartsWith(parts[i], "exportname=")) {
        export_name = parts[i].substr(11);
      } else if (parts[i] == "unix" && i + 1 < parts.size()) {
        socket_path = parts[++i];
      } else if (host.empty()) {
        host = parts[i];
      } else {
        port = parts[i];
      }
    }
  } else {
    return absl::InvalidArgumentError("not an NBD address: " + address);
  }
  int fd;
  if (!socket_path.empty()) {
    ASSIGN_OR_RETURN(fd, ConnectUnix(socket_path));
  } else {
    ASSIGN_OR_RETURN(fd, ConnectTcp(host, port));
  }
  return FromSocket(fd, address, export_name, o);
}

absl::StatusOr<std::unique_ptr<NbdImage>> NbdImage::FromSocket(int fd, const std::string& name,
                                                               const std::string& export_name,
                                                               const NbdOptions& o) {
  if (o.timeout_s > 0) {
    timeval tv{o.timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  std::unique_ptr<NbdImage> n(new NbdImage(fd, name));
  n->timeout_s_ = o.timeout_s > 0 ? o.timeout_s : 30;
  RETURN_IF_ERROR(n->Handshake(export_name, o));
  n->reader_ = std::thread([p = n.get()] { p->Reader(); });
  return n;
}

NbdImage::~NbdImage() {
  if (fd_ < 0) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  if (reader_.joinable()) {
    {
      std::lock_guard<std::mutex> s(send_mu_);
      uint8_t req[28] = {};
      StoreBe32(req, kRequestMagic);
      StoreBe16(req + 6, kCmdDisc);
      (void)SendAll(req, sizeof req);
    }
    shutdown(fd_, SHUT_RDWR);  // wakes the reader
    reader_.join();
  }
  close(fd_);
}

absl::Status NbdImage::SendAll(const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t r = send(fd_, c, n, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      return absl::UnavailableError(absl::StrFormat("%s: send: %s", name_,
                                                    r < 0 ? strerror(errno) : "closed"));
    }
    c += r;
    n -= r;
  }
  return absl::OkStatus();
}

absl::Status NbdImage::SendV(std::span<const iovec> iov) {
  for (const iovec& v : iov) RETURN_IF_ERROR(SendAll(v.iov_base, v.iov_len));
  return absl::OkStatus();
}

absl::Status NbdImage::RecvAll(void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    ssize_t r = recv(fd_, c, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return absl::DeadlineExceededError(absl::StrFormat("%s: the server stopped answering", name_));
    }
    if (r <= 0) {
      return absl::UnavailableError(absl::StrFormat("%s: recv: %s", name_,
                                                    r < 0 ? strerror(errno) : "connection closed"));
    }
    c += r;
    n -= r;
  }
  return absl::OkStatus();
}

absl::Status NbdImage::Handshake(const std::string& export_name, const NbdOptions& o) {
  uint8_t hello[18];
  RETURN_IF_ERROR(RecvAll(hello, sizeof hello));
  if (LoadBe64(hello) != kNbdMagic) {
    return absl::FailedPreconditionError(name_ + ": not an NBD server (no NBDMAGIC)");
  }
  if (LoadBe64(hello + 8) != kOptMagic) {
    return absl::UnimplementedError(name_ + ": oldstyle NBD servers are not supported");
  }
  const uint16_t hflags = LoadBe16(hello + 16);
  if (!(hflags & kFlagFixedNewstyle)) {
    return absl::UnimplementedError(name_ + ": server does not speak fixed newstyle");
  }
  const bool no_zeroes = hflags & kFlagNoZeroes;
  uint8_t cflags[4];
  StoreBe32(cflags, kFlagFixedNewstyle | (no_zeroes ? kFlagNoZeroes : 0));
  RETURN_IF_ERROR(SendAll(cflags, 4));

  auto send_opt = [&](uint32_t opt, const std::vector<uint8_t>& data) {
    std::vector<uint8_t> b(16 + data.size());
    StoreBe64(&b[0], kOptMagic);
    StoreBe32(&b[8], opt);
    StoreBe32(&b[12], data.size());
    if (!data.empty()) memcpy(&b[16], data.data(), data.size());
    return SendAll(b.data(), b.size());
  };
  struct Reply {
    uint32_t type;
    std::vector<uint8_t> data;
  };
  auto recv_reply = [&](uint32_t opt) -> absl::StatusOr<Reply> {
    uint8_t h[20];
    RETURN_IF_ERROR(RecvAll(h, sizeof h));
    if (LoadBe64(h) != kRepMagic || LoadBe32(h + 8) != opt) {
      return absl::DataLossError(absl::StrFormat(
          "%s: bad option reply (magic 0x%x, option %u; expected option %u)", name_,
          LoadBe64(h), LoadBe32(h + 8), opt));
    }
    Reply r{LoadBe32(h + 12), {}};
    uint32_t len = LoadBe32(h + 16);
    if (len > kMaxOptionReply) {
      return absl::DataLossError(absl::StrFormat(
          "%s: option reply length %u exceeds %u", name_, len, kMaxOptionReply));
    }
    r.data.resize(len);
    RETURN_IF_ERROR(RecvAll(r.data.data(), len));
    return r;
  };
  auto rep_error = [&](const Reply& r, const char* what) {
    std::string msg(r.data.begin(), r.data.end());
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: %s refused by the server (reply 0x%08x)%s%s", name_, what, r.type,
        msg.empty() ? "" : ": ", msg));
  };

  if (o.structured_replies) {
    RETURN_IF_ERROR(send_opt(kOptStructuredReply, {}));
    ASSIGN_OR_RETURN(Reply r, recv_reply(kOptStructuredReply));
    structured_ = r.type == kRepAck;
  }
  // NBD_OPT_GO: name, then ask for the block size info.
  std::vector<uint8_t> go(4 + export_name.size() + 2 + 2);
  StoreBe32(&go[0], export_name.size());
  memcpy(&go[4], export_name.data(), export_name.size());
  StoreBe16(&go[4 + export_name.size()], 1);
  StoreBe16(&go[6 + export_name.size()], kInfoBlockSize);
  RETURN_IF_ERROR(send_opt(kOptGo, go));
  bool have_export = false;
  for (int i = 0; i < 64; ++i) {  // a bounded number of info replies
    ASSIGN_OR_RETURN(Reply r, recv_reply(kOptGo));
    if (r.type == kRepInfo) {
      if (r.data.size() >= 12 && LoadBe16(&r.data[0]) == kInfoExport) {
        size_ = LoadBe64(&r.data[2]);
        flags_ = LoadBe16(&r.data[10]);
        have_export = true;
      } else if (r.data.size() >= 14 && LoadBe16(&r.data[0]) == kInfoBlockSize) {
        uint32_t max = LoadBe32(&r.data[10]);
        if (max >= 512) max_request_ = std::min<uint32_t>(max, 32 << 20);
      }
      continue;
    }
    if (r.type == kRepAck) break;
    if (r.type == kRepErrUnsup) {
      // Old server: NBD_OPT_EXPORT_NAME, which has no error reply.
      std::vector<uint8_t> name(export_name.begin(), export_name.end());
      RETURN_IF_ERROR(send_opt(kOptExportName, name));
      uint8_t e[10];
      RETURN_IF_ERROR(RecvAll(e, sizeof e));
      size_ = LoadBe64(e);
      flags_ = LoadBe16(e + 8);
      if (!no_zeroes) {
        uint8_t z[124];
        RETURN_IF_ERROR(RecvAll(z, sizeof z));
      }
      have_export = true;
      structured_ = false;  // negotiated, but be conservative
      break;
    }
    if (r.type & 0x80000000u) {
      (void)send_opt(kOptAbort, {});
      return rep_error(r, absl::StrFormat("export '%s'", export_name).c_str());
    }
  }
  if (!have_export) {
    return absl::DataLossError(name_ + ": server finished NBD_OPT_GO without export info");
  }
  if (size_ > (1ULL << 62)) {
    return absl::DataLossError(absl::StrFormat("%s: absurd export size %u", name_, size_));
  }
  read_only_ = o.read_only || (flags_ & kTFlagReadOnly);
  return absl::OkStatus();
}

Capabilities NbdImage::capabilities() const {
  return {.read_only = read_only_,
          .discard = bool(flags_ & kTFlagSendTrim),
          .write_zeroes = bool(flags_ & kTFlagSendWriteZeroes)};
}

absl::Status NbdImage::ReplyError(const Pending& p, uint32_t err,
                                  const std::string& msg) const {
  return absl::Status(CodeForNbdError(err),
                      absl::StrFormat("%s: NBD %s at offset 0x%x (+%u): error %u%s%s", name_,
                                      CmdName(p.type), p.offset, p.len, err,
                                      msg.empty() ? "" : ": ", msg));
}

void NbdImage::FailAll(absl::Status s) {
  std::lock_guard<std::mutex> l(mu_);
  if (!broken_) {
    broken_ = true;
    broken_status_ = s;
  }
  for (auto& [cookie, p] : pending_) {
    p->status = s;
    p->done = true;
  }
  pending_.clear();
  cv_.notify_all();
}

absl::Status NbdImage::Command(uint16_t type, uint64_t offset, uint64_t len,
                               std::span<const iovec> data,
                               std::span<const iovec> read_into) {
  Pending p{type, offset, len, read_into};
  uint64_t cookie;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (broken_) {
      return absl::UnavailableError(absl::StrFormat(
          "%s: connection is broken (%s)", name_, broken_status_.message()));
    }
    cookie = ++cookie_;
    pending_[cookie] = &p;
  }
  {
    std::lock_guard<std::mutex> s(send_mu_);
    uint8_t req[28];
    StoreBe32(req, kRequestMagic);
    StoreBe16(req + 4, 0);
    StoreBe16(req + 6, type);
    StoreBe64(req + 8, cookie);
    StoreBe64(req + 16, offset);
    StoreBe32(req + 24, uint32_t(len));
    absl::Status st = SendAll(req, sizeof req);
    if (st.ok() && type == kCmdWrite) st = SendV(data);
    if (!st.ok()) {
      // The reader sees the dead socket and fails every pending request
      // (this one included); it alone touches their buffers.
      shutdown(fd_, SHUT_RDWR);
    }
  }
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return p.done; });
  return p.status;
}

void NbdImage::Reader() {
  for (;;) {
    pollfd pfd{fd_, POLLIN, 0};
    int r = poll(&pfd, 1, timeout_s_ * 1000);
    if (r < 0 && errno == EINTR) continue;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_ && pending_.empty()) return;
      if (r == 0 && pending_.empty()) continue;  // idle, not late
    }
    if (r == 0) {
      FailAll(absl::DeadlineExceededError(
          absl::StrFormat("%s: the server stopped answering", name_)));
      return;
    }
    absl::Status s = ReadReply();
    if (!s.ok()) {
      FailAll(s);
      return;
    }
  }
}

absl::Status NbdImage::ReadReply() {
  uint8_t m[4];
  RETURN_IF_ERROR(RecvAll(m, 4));
  const uint32_t magic = LoadBe32(m);
  auto find = [&](uint64_t cookie) -> Pending* {
    std::lock_guard<std::mutex> l(mu_);
    auto it = pending_.find(cookie);
    return it == pending_.end() ? nullptr : it->second;
  };
  auto complete = [&](uint64_t cookie) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = pending_.find(cookie);
    if (it != pending_.end()) {
      it->second->done = true;
      pending_.erase(it);
    }
    cv_.notify_all();
  };
  if (magic == kSimpleReplyMagic) {
    uint8_t r[12];
    RETURN_IF_ERROR(RecvAll(r, 12));
    const uint64_t cookie = LoadBe64(r + 4);
    Pending* p = find(cookie);
    if (p == nullptr) return absl::DataLossError(name_ + ": reply for an unknown request");
    const uint32_t err = LoadBe32(r);
    if (err) {
      p->status = ReplyError(*p, err, "");
    } else if (p->type == kCmdRead) {
      for (const iovec& v : p->read_into) RETURN_IF_ERROR(RecvAll(v.iov_base, v.iov_len));
    }
    complete(cookie);
    return absl::OkStatus();
  }
  if (magic != kStructuredReplyMagic || !structured_) {
    return absl::DataLossError(absl::StrFormat("%s: bad reply magic 0x%08x", name_, magic));
  }
  uint8_t h[16];
  RETURN_IF_ERROR(RecvAll(h, 16));
  const uint16_t flags = LoadBe16(h), ctype = LoadBe16(h + 2);
  const uint64_t cookie = LoadBe64(h + 4);
  const uint32_t clen = LoadBe32(h + 12);
  Pending* p = find(cookie);
  if (p == nullptr) {
    return absl::DataLossError(name_ + ": structured reply for an unknown request");
  }
  const uint64_t offset = p->offset, len = p->len;
  if (clen > len + 4096) {
    return absl::DataLossError(absl::StrFormat(
        "%s: structured reply chunk of %u bytes for a %u-byte request", name_, clen, len));
  }
  if (ctype == kReplyOffsetData && p->type == kCmdRead) {
    uint8_t o8[8];
    if (clen < 8) return absl::DataLossError(name_ + ": short OFFSET_DATA chunk");
    RETURN_IF_ERROR(RecvAll(o8, 8));
    const uint64_t at = LoadBe64(o8), n = clen - 8;
    if (at < offset || at - offset > len || n > len - (at - offset)) {
      return absl::DataLossError(absl::StrFormat(
          "%s: OFFSET_DATA chunk [0x%x, +%u) outside the request", name_, at, n));
    }
    for (const iovec& v : IovSlice(p->read_into, at - offset, n)) {
      RETURN_IF_ERROR(RecvAll(v.iov_base, v.iov_len));
    }
  } else if (ctype == kReplyOffsetHole && p->type == kCmdRead) {
    uint8_t b[12];
    if (clen != 12) return absl::DataLossError(name_ + ": bad OFFSET_HOLE chunk");
    RETURN_IF_ERROR(RecvAll(b, 12));
    const uint64_t at = LoadBe64(b), n = LoadBe32(b + 8);
    if (at < offset || at - offset > len || n > len - (at - offset)) {
      return absl::DataLossError(name_ + ": OFFSET_HOLE chunk outside the request");
    }
    IovZero(IovSlice(p->read_into, at - offset, n));
  } else {  // errors, NONE, or a chunk type we do not use
    std::vector<uint8_t> pl(clen);
    RETURN_IF_ERROR(RecvAll(pl.data(), clen));
    if (ctype & 0x8000) {
      uint32_t err = clen >= 4 ? LoadBe32(&pl[0]) : 5;
      std::string msg;
      if (clen >= 6) {
        uint16_t ml = LoadBe16(&pl[4]);
        if (6u + ml <= clen) msg.assign(pl.begin() + 6, pl.begin() + 6 + ml);
      }
      if (p->status.ok()) p->status = ReplyError(*p, err ? err : 5, msg);
    }
  }
  if (flags & kReplyFlagDone) complete(cookie);
  return absl::OkStatus();
}

absl::Status NbdImage::ReadV(uint64_t offset, std::span<const iovec> iov) {
  const uint64_t len = IovLength(iov);
  RETURN_IF_ERROR(CheckRange(offset, len));
  for (uint64_t pos = 0; pos < len;) {
    uint64_t n = std::min<uint64_t>(max_request_, len - pos);
    auto slice = IovSlice(iov, pos, n);
    RETURN_IF_ERROR(Command(kCmdRead, offset + pos, n, {}, slice));
    pos += n;
  }
  return absl::OkStatus();
}

absl::Status NbdImage::WriteV(uint64_t offset, std::span<const iovec> iov) {
  const uint64_t len = IovLength(iov);
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (read_only_) return absl::PermissionDeniedError(name_ + ": export is read-only");
  for (uint64_t pos = 0; pos < len;) {
    uint64_t n = std::min<uint64_t>(max_request_, len - pos);
    RETURN_IF_ERROR(Command(kCmdWrite, offset + pos, n, IovSlice(iov, pos, n), {}));
    pos += n;
  }
  return absl::OkStatus();
}

absl::Status NbdImage::Flush() {
  if (read_only_ || !(flags_ & kTFlagSendFlush)) return absl::OkStatus();
  return Command(kCmdFlush, 0, 0, {}, {});
}

absl::Status NbdImage::Discard(uint64_t offset, uint64_t len) {
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (read_only_) return absl::PermissionDeniedError(name_ + ": export is read-only");
  if (!(flags_ & kTFlagSendTrim)) return absl::OkStatus();  // a hint
  for (uint64_t pos = 0; pos < len;) {
    uint64_t n = std::min<uint64_t>(1u << 30, len - pos);
    RETURN_IF_ERROR(Command(kCmdTrim, offset + pos, n, {}, {}));
    pos += n;
  }
  return absl::OkStatus();
}

absl::Status NbdImage::WriteZeroes(uint64_t offset, uint64_t len) {
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (read_only_) return absl::PermissionDeniedError(name_ + ": export is read-only");
  if (flags_ & kTFlagSendWriteZeroes) {
    for (uint64_t pos = 0; pos < len;) {
      uint64_t n = std::min<uint64_t>(1u << 30, len - pos);
      RETURN_IF_ERROR(Command(kCmdWriteZeroes, offset + pos, n, {}, {}));
      pos += n;
    }
    return absl::OkStatus();
  }
  std::vector<uint8_t> zeros(std::min<uint64_t>(len, 1 << 20), 0);
  for (uint64_t pos = 0; pos < len;) {
    uint64_t n = std::min<uint64_t>(zeros.size(), len - pos);
    RETURN_IF_ERROR(Write(offset + pos, zeros.data(), n));
    pos += n;
  }
  return absl::OkStatus();
}

}  // namespace block
