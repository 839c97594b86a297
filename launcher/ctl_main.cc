// kindling-ctl: the gRPC half of the `kindling` command (`kindling serve`
// and the client verbs); `kindling` execs it so that `kindling run` and
// every VM process stay free of gRPC (docs/design/control-plane.md).
#include <string>
#include <vector>

#include "launcher/control/client.h"
#include "launcher/control/cpu_pool_cli.h"
#include "launcher/control/daemon.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "serve") {
    return kindling::control::ServeMain({args.begin() + 1, args.end()});
  }
  if (!args.empty() && args[0] == "cpu-profile") {
    return kindling::control::CpuProfileMain({args.begin() + 1, args.end()});
  }
  if (!args.empty() && args[0] == "pool-join") {
    return kindling::control::PoolJoinMain({args.begin() + 1, args.end()});
  }
  if (!args.empty() && args[0] == "cpu-baseline") {
    return kindling::control::CpuBaselineMain({args.begin() + 1, args.end()});
  }
  return kindling::control::ClientMain(args);
}
