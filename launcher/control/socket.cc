#include "launcher/control/socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "launcher/control/wire.h"

namespace kindling::control {
namespace {

absl::StatusOr<sockaddr_un> Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path '", path, "': 1 to ", sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

}  // namespace

absl::StatusOr<UniqueFd> ListenSeqpacket(const std::string& path) {
  auto addr = Address(path);
  if (!addr.ok()) return addr.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "socket(AF_UNIX, SOCK_SEQPACKET)");
  ::unlink(path.c_str());
  mode_t old = ::umask(0077);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof(*addr));
  ::umask(old);
  if (rc != 0) return absl::ErrnoToStatus(errno, absl::StrCat("bind ", path));
  if (::listen(fd.get(), 8) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("listen ", path));
  return fd;
}

absl::StatusOr<UniqueFd> ConnectSeqpacket(const std::string& path) {
  auto addr = Address(path);
  if (!addr.ok()) return addr.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "socket(AF_UNIX, SOCK_SEQPACKET)");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof(*addr)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("connect ", path));
  }
  return fd;
}

void SetSendTimeout(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

absl::Status SendPacket(int fd, const std::string& packet) {
  for (;;) {
    ssize_t n = ::send(fd, packet.data(), packet.size(), MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(packet.size())) return absl::OkStatus();
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, "control socket send");
    return absl::DataLossError("control socket: short send");
  }
}

absl::StatusOr<bool> RecvPacket(int fd, std::string& out) {
  out.resize(kMaxPacket + 1);
  for (;;) {
    ssize_t n = ::recv(fd, out.data(), out.size(), MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, "control socket recv");
    if (n == 0) {
      out.clear();
      return false;
    }
    if (static_cast<size_t>(n) > kMaxPacket) {
      return absl::InvalidArgumentError(absl::StrCat(
          "control packet of ", n, " bytes: over the ", kMaxPacket, " limit"));
    }
    out.resize(n);
    return true;
  }
}

}  // namespace kindling::control
