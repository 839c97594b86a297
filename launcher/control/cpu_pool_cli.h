// `kindling cpu-profile` and `kindling cpu-baseline`: a host's CPU profile
// and a pool's baseline CPU template (libs/vcpu cpu_pool), from the
// command line.
#ifndef LAUNCHER_CONTROL_CPU_POOL_CLI_H_
#define LAUNCHER_CONTROL_CPU_POOL_CLI_H_

#include <string>
#include <vector>

namespace kindling::control {

// Both return the process exit status: 0, 1 (failed), 2 (usage).
int CpuProfileMain(const std::vector<std::string>& args);
int CpuBaselineMain(const std::vector<std::string>& args);
int PoolJoinMain(const std::vector<std::string>& args);

}  // namespace kindling::control

#endif  // LAUNCHER_CONTROL_CPU_POOL_CLI_H_
