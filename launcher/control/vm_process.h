// The VM process: one VM under the daemon, in its own process.
//
//   kindling vm-process --dir DIR [--ready-fd N] -- <kindling run flags>
//
// Builds the VM from `kindling run` flags (so a daemon VM is exactly a
// `kindling run` VM), listens on DIR/control.sock (SOCK_SEQPACKET, the
// protocol of control/wire.h), writes DIR/pid, and reports "ok" or the
// build error on the ready fd. It keeps the last 64 KiB of console output
// for every new connection, stays after the guest stops (holding the exit
// status and the console) and ends on kQuit.
#ifndef KINDLING_LAUNCHER_CONTROL_VM_PROCESS_H_
#define KINDLING_LAUNCHER_CONTROL_VM_PROCESS_H_

#include <string>
#include <vector>

namespace kindling::control {

// `args` are the words after `kindling vm-process`; returns the exit status.
int VmProcessMain(const std::vector<std::string>& args);

}  // namespace kindling::control

#endif  // KINDLING_LAUNCHER_CONTROL_VM_PROCESS_H_
