// kindling.v1.VmConfig <-> `kindling run` flags, and the daemon's request
// validation. The daemon runs each VM as `kindling vm-process -- FLAGS`, so
// a VmConfig is checked here field by field (errors name the field and the
// limit) and then by the same flag parser `kindling run` uses.
//
//   RETURN_IF_ERROR(control::ValidateVmId(req.vm_id()));
//   ASSIGN_OR_RETURN(std::vector<std::string> flags,
//                    control::ToRunFlags(req.config(), dir + "/cpu_template.json"));
#ifndef KINDLING_LAUNCHER_CONTROL_CONFIG_H_
#define KINDLING_LAUNCHER_CONTROL_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kindling/v1/vm.pb.h"
#include "launcher/cli.h"

namespace kindling::control {

inline constexpr uint32_t kMaxVcpus = 254;
inline constexpr uint64_t kMinMemoryMib = 8;
inline constexpr uint64_t kMaxMemoryMib = 1 << 20;  // 1 TiB
inline constexpr size_t kMaxCmdline = 4095;
inline constexpr size_t kMaxCpuTemplate = 1 << 20;
inline constexpr int kMaxDisks = 16;
inline constexpr int kMaxNets = 8;

// 1 to 64 bytes of [A-Za-z0-9._-], not starting with '.'.
absl::Status ValidateVmId(const std::string& id);

// Field-by-field limits (INVALID_ARGUMENT naming the field); host limits
// (RESOURCE_EXHAUSTED) when `host_memory_mib`/`host_max_vcpus` are non-zero.
absl::Status ValidateVmConfig(const v1::VmConfig& c, uint64_t host_memory_mib = 0,
                              uint32_t host_max_vcpus = 0);

// The `kindling run` flags for a validated config. The CPU template JSON,
// when there is one, is to be written to `template_path`, which the flags
// name. The flags are parsed once here, so what the VM process will refuse
// is refused now.
absl::StatusOr<std::vector<std::string>> ToRunFlags(const v1::VmConfig& c,
                                                    const std::string& template_path);

// The reverse, for `kindling create` (which takes `kindling run`'s flags):
// reads the CPU template file into the config.
absl::StatusOr<v1::VmConfig> FromRunOptions(const RunOptions& o);

}  // namespace kindling::control

#endif  // KINDLING_LAUNCHER_CONTROL_CONFIG_H_
