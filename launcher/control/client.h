// The `kindling` verbs that are gRPC clients of `kindling serve`:
// create, start, pause, resume, shutdown, kill, delete, get, list, events,
// console, metrics, host. Human tables by default, `--output json` for
// programs; `--socket unix:PATH` (default $KINDLING_SOCKET or
// /run/kindling/kindling.sock).
#ifndef KINDLING_LAUNCHER_CONTROL_CLIENT_H_
#define KINDLING_LAUNCHER_CONTROL_CLIENT_H_

#include <string>
#include <vector>

namespace kindling::control {

// `args` start with the verb; returns the exit status (0, 1 for an RPC
// error, 2 for a usage error).
int ClientMain(const std::vector<std::string>& args);

}  // namespace kindling::control

#endif  // KINDLING_LAUNCHER_CONTROL_CLIENT_H_
