// Command-line parsing for `kindling run`: flags into a VmConfig.
//
//   ASSIGN_OR_RETURN(RunOptions opts, ParseRunFlags(args));
#ifndef KINDLING_LAUNCHER_CLI_H_
#define KINDLING_LAUNCHER_CLI_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launcher/microvm.h"

namespace kindling {

struct RunOptions {
  VmConfig vm;
  bool print_stats = false;  // KVM exit statistics on stderr at the end
  bool help = false;
};

// `args` are the words after `kindling run`. Accepts --flag value and
// --flag=value. Errors name the flag and say what was expected.
absl::StatusOr<RunOptions> ParseRunFlags(const std::vector<std::string>& args);
std::string RunUsage();

}  // namespace kindling

#endif  // KINDLING_LAUNCHER_CLI_H_
