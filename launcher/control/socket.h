// SOCK_SEQPACKET Unix sockets for the daemon <-> VM process protocol.
//
//   ASSIGN_OR_RETURN(UniqueFd fd, control::ConnectSeqpacket("/run/.../control.sock"));
//   RETURN_IF_ERROR(control::SendPacket(fd.get(), control::Encode(msg)));
//   std::string pkt;
//   ASSIGN_OR_RETURN(bool open, control::RecvPacket(fd.get(), pkt));
#ifndef KINDLING_LAUNCHER_CONTROL_SOCKET_H_
#define KINDLING_LAUNCHER_CONTROL_SOCKET_H_

#include <string>

#include "absl/status/statusor.h"
#include "vm-memory/unique_fd.h"

namespace kindling::control {

using vm_memory::UniqueFd;

// Binds and listens (mode 0600); refuses a path longer than sun_path.
absl::StatusOr<UniqueFd> ListenSeqpacket(const std::string& path);
absl::StatusOr<UniqueFd> ConnectSeqpacket(const std::string& path);
// Sends one packet; a peer that does not read for `timeout_ms` is an error.
absl::Status SendPacket(int fd, const std::string& packet);
// Receives one packet into `out`; false on an orderly EOF. A packet larger
// than kMaxPacket is an error (it was truncated).
absl::StatusOr<bool> RecvPacket(int fd, std::string& out);
// SO_SNDTIMEO, so a peer that stops reading cannot block the sender forever.
void SetSendTimeout(int fd, int ms);

}  // namespace kindling::control

#endif  // KINDLING_LAUNCHER_CONTROL_SOCKET_H_
