// `kindling serve`: the gRPC daemon (kindling.v1 VmService and HostService,
// grpc.health.v1, server reflection). Each VM runs in its own process
// (vm_process.h); the daemon validates requests, supervises those
// processes through VmHandle, and serves their events and consoles.
//
//   kindling serve [--listen unix:PATH] [--state-dir DIR] [--stop-vms-on-exit]
#ifndef KINDLING_LAUNCHER_CONTROL_DAEMON_H_
#define KINDLING_LAUNCHER_CONTROL_DAEMON_H_

#include <string>
#include <vector>

namespace kindling::control {

// `args` are the words after `kindling serve`; returns the exit status.
int ServeMain(const std::vector<std::string>& args);

}  // namespace kindling::control

#endif  // KINDLING_LAUNCHER_CONTROL_DAEMON_H_
