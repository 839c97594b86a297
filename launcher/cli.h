// Command-line parsing for `kindling run`: flags into a VmConfig.
//
//   ASSIGN_OR_RETURN(RunOptions opts, ParseRunFlags(args));
#ifndef KINDLING_LAUNCHER_CLI_H_
#define KINDLING_LAUNCHER_CLI_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launcher/microvm.h"
#include "migration/snapshot.h"

namespace kindling {

struct RunOptions {
  VmConfig vm;
  bool print_stats = false;  // KVM exit statistics on stderr at the end
  std::string restore_dir;   // --restore: resume a snapshot instead of booting
  std::string incoming;      // --incoming ADDR: receive a live migration
  ::migration::RestoreMode restore_mode = ::migration::RestoreMode::kEager;
  bool help = false;
};

// `args` are the words after `kindling run`. Accepts --flag value and
// --flag=value. Errors name the flag and say what was expected.
absl::StatusOr<RunOptions> ParseRunFlags(const std::vector<std::string>& args);
std::string RunUsage();

// `kindling run`'s exit status for how a VM stopped: the guest's debug-exit
// byte, 0 after a guest shutdown/reboot, 126 after a crash, the requested
// status (128+signal) after a stop from outside.
inline constexpr int kExitGuestCrashed = 126;
int ExitStatusOf(const vcpu::VcpuRunner::Outcome& out);

}  // namespace kindling

#endif  // KINDLING_LAUNCHER_CLI_H_
