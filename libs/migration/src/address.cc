#include "migration/address.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"

namespace migration {
namespace {

// Connections waiting to be accepted: probes and scanners that a
// destination reads and drops must not keep the real source out.
constexpr int kBacklog = 8;

using vm_memory::UniqueFd;

absl::Status Bad(std::string_view address, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("migration address '", std::string(address), "': ", std::string(why)));
}

absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unix socket path of ", path.size(), " bytes (1 to 107)"));
  }
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

absl::StatusOr<addrinfo*> Resolve(const StreamAddress& a, bool passive) {
  addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(a.host.empty() ? nullptr : a.host.c_str(), a.port.c_str(), &hints, &res);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("resolving ", a.host, ":", a.port, ": ", ::gai_strerror(rc)));
  }
  return res;
}

void TuneTcp(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Waits for a non-blocking connect to finish.
absl::Status FinishConnect(int fd, absl::Duration timeout) {
  pollfd p = {fd, POLLOUT, 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  } while (r < 0 && errno == EINTR);
  if (r == 0) return absl::DeadlineExceededError("connect timed out");
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) return absl::ErrnoToStatus(err, "connect");
  int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<StreamAddress> ParseStreamAddress(std::string_view address) {
  if (address.substr(0, 5) == "unix:") {
    std::string path(address.substr(5));
    if (path.empty() || path.size() > 107) return Bad(address, "a path of 1 to 107 bytes");
    return StreamAddress{StreamAddress::Kind::kUnix, path, "", ""};
  }
  if (address.substr(0, 4) == "tcp:") {
    std::string_view rest = address.substr(4);
    size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return Bad(address, "expected tcp:HOST:PORT");
    std::string host(rest.substr(0, colon)), port(rest.substr(colon + 1));
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 0 || p > 65535) {
      return Bad(address, "the port must be 0 to 65535 (0: any, to listen)");
    }
    return StreamAddress{StreamAddress::Kind::kTcp, "", host, port};
  }
  return Bad(address, "expected unix:PATH or tcp:HOST:PORT");
}

namespace {

// Whether a process accepts connections on the unix socket `sa`. The probe
// connects and closes at once: a kindling destination (AcceptSource)
// ignores it; a full backlog counts as listening.
bool SomeoneListens(const sockaddr_un& sa) {
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe.valid()) return false;
  int r = ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
  return r == 0 || errno == EAGAIN || errno == EINPROGRESS;
}

}  // namespace

absl::StatusOr<UniqueFd> Listen(std::string_view address) {
  ASSIGN_OR_RETURN(StreamAddress a, ParseStreamAddress(address));
  if (a.kind == StreamAddress::Kind::kUnix) {
    ASSIGN_OR_RETURN(sockaddr_un sa, UnixAddress(a.path));
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return absl::ErrnoToStatus(errno, "socket");
    struct stat st;
    if (::lstat(a.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      if (SomeoneListens(sa)) {
        return absl::FailedPreconditionError(
            absl::StrCat("unix:", a.path, ": another process is listening there"));
      }
      ::unlink(a.path.c_str());  // a dead listener's leftover
    }
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("bind ", a.path));
    }
    if (::listen(fd.get(), kBacklog) != 0) return absl::ErrnoToStatus(errno, "listen");
    return fd;
  }
  ASSIGN_OR_RETURN(addrinfo * res, Resolve(a, /*passive=*/true));
  absl::Status last = absl::UnavailableError("no address");
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0));
    if (!fd.valid()) continue;
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd.get(), kBacklog) == 0) {
      ::freeaddrinfo(res);
      return fd;
    }
    last = absl::ErrnoToStatus(errno, absl::StrCat("listen on ", a.host, ":", a.port));
  }
  ::freeaddrinfo(res);
  return last;
}

absl::StatusOr<UniqueFd> Accept(int listener, absl::Duration timeout) {
  pollfd p = {listener, POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  } while (r < 0 && errno == EINTR);
  if (r == 0) return absl::DeadlineExceededError("no migration source connected in time");
  if (r < 0) return absl::ErrnoToStatus(errno, "poll");
  UniqueFd fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "accept");
  TuneTcp(fd.get());
  return fd;
}

absl::StatusOr<UniqueFd> Connect(std::string_view address, absl::Duration timeout) {
  ASSIGN_OR_RETURN(StreamAddress a, ParseStreamAddress(address));
  if (a.kind == StreamAddress::Kind::kUnix) {
    ASSIGN_OR_RETURN(sockaddr_un sa, UnixAddress(a.path));
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return absl::ErrnoToStatus(errno, "socket");
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("connect to ", a.path));
    }
    return fd;
  }
  ASSIGN_OR_RETURN(addrinfo * res, Resolve(a, /*passive=*/false));
  absl::Status last = absl::UnavailableError("no address");
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) continue;
    int rc = ::connect(fd.get(), ai->ai_addr, ai->ai_addrlen);
    absl::Status s = rc == 0 || errno == EINPROGRESS ? FinishConnect(fd.get(), timeout)
                                                     : absl::ErrnoToStatus(errno, "connect");
    if (s.ok()) {
      ::freeaddrinfo(res);
      if (rc == 0) ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
      TuneTcp(fd.get());
      return fd;
    }
    last = absl::Status(s.code(), absl::StrCat(a.host, ":", a.port, ": ", s.message()));
  }
  ::freeaddrinfo(res);
  return last;
}

}  // namespace migration
