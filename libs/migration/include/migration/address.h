// Where a migration stream goes: `unix:PATH` or `tcp:HOST:PORT` (HOST a
// name or an IPv4/IPv6 address, [v6] allowed), as QEMU's -incoming and
// `migrate` take them.
//
//   ASSIGN_OR_RETURN(vm_memory::UniqueFd l, migration::Listen("unix:/run/m.sock"));
//   ASSIGN_OR_RETURN(vm_memory::UniqueFd c, migration::Accept(l.get(), absl::Minutes(5)));
//   ... on the source:
//   ASSIGN_OR_RETURN(vm_memory::UniqueFd fd, migration::Connect("tcp:10.0.0.2:4444", absl::Seconds(10)));
#ifndef MIGRATION_ADDRESS_H_
#define MIGRATION_ADDRESS_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "vm-memory/unique_fd.h"

namespace migration {

struct StreamAddress {
  enum class Kind { kUnix, kTcp } kind;
  std::string path;  // unix
  std::string host;  // tcp
  std::string port;  // tcp
};

absl::StatusOr<StreamAddress> ParseStreamAddress(std::string_view address);
// A listening socket. A unix path that exists is replaced only if it is a
// socket nobody listens on (a probe connection finds out; a destination
// that uses AcceptSource ignores it); FAILED_PRECONDITION otherwise.
absl::StatusOr<vm_memory::UniqueFd> Listen(std::string_view address);
absl::StatusOr<vm_memory::UniqueFd> Accept(int listener, absl::Duration timeout);
absl::StatusOr<vm_memory::UniqueFd> Connect(std::string_view address, absl::Duration timeout);

}  // namespace migration

#endif  // MIGRATION_ADDRESS_H_
