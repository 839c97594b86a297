#include "launcher/control/cpu_pool_cli.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "vcpu/cpu_baseline.h"
#include "vcpu/cpu_profile.h"
#include "vcpu/kvm.h"

namespace kindling::control {
namespace {

constexpr char kProfileUsage[] = R"(usage: kindling cpu-profile [--output FILE] [--host NAME] [--kvm-device PATH]

Writes this host's CPU profile as JSON (kindling.vcpu.v1.CpuProfile): the
CPUID KVM supports (every leaf and subleaf), KVM's feature MSRs, XSAVE
sizes, address bits, the TSC frequency and whether KVM can scale it.
--host names the host in the profile (default: the hostname).
)";

constexpr char kBaselineUsage[] = R"(usage: kindling cpu-baseline PROFILE.json... [--output FILE]

Writes the Firecracker-format CPU template that leaves a guest only what
every profiled host offers (docs/design/cpu-pool.md has the rules); boot
the pool's guests with it (kindling run --cpu-template FILE) and they can
migrate to any of its hosts.
)";

int Fail(absl::string_view why, int status = 1) {
  std::fprintf(stderr, "kindling: %s\n", std::string(why).c_str());
  return status;
}

std::string HostName() {
  char name[256] = {};
  return ::gethostname(name, sizeof(name) - 1) == 0 ? name : "localhost";
}

int Write(const std::string& text, const std::string& path) {
  if (path.empty()) {
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Fail(absl::StrCat("cannot write ", path));
  return 0;
}

// Takes "--flag VALUE" pairs named in `flags` out of `args`; the rest stay.
absl::StatusOr<std::vector<std::string>> TakeFlags(
    const std::vector<std::string>& args,
    std::initializer_list<std::pair<const char*, std::string*>> flags) {
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    bool taken = false;
    for (const auto& [name, value] : flags) {
      if (args[i] != name) continue;
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat(name, " needs a value"));
      *value = args[++i];
      taken = true;
    }
    if (!taken) rest.push_back(args[i]);
  }
  return rest;
}

bool WantsHelp(const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

}  // namespace

int CpuProfileMain(const std::vector<std::string>& args) {
  if (WantsHelp(args)) return std::fputs(kProfileUsage, stdout), 0;
  std::string output, host = HostName(), device = "/dev/kvm";
  auto rest = TakeFlags(args, {{"--output", &output}, {"--host", &host}, {"--kvm-device", &device}});
  if (!rest.ok()) return Fail(rest.status().message(), 2);
  if (!rest->empty()) return Fail(absl::StrCat("cpu-profile: unexpected '", (*rest)[0], "'"), 2);
  absl::StatusOr<std::unique_ptr<::vcpu::Kvm>> kvm = ::vcpu::Kvm::Open(device);
  if (!kvm.ok()) return Fail(absl::StrCat("cpu-profile: ", device, ": ", kvm.status().message()));
  absl::StatusOr<::vcpu::CpuProfile> p = ::vcpu::CollectCpuProfile(**kvm, host);
  if (!p.ok()) return Fail(absl::StrCat("cpu-profile: ", p.status().message()));
  return Write(::vcpu::CpuProfileToJson(*p), output);
}

int CpuBaselineMain(const std::vector<std::string>& args) {
  if (WantsHelp(args)) return std::fputs(kBaselineUsage, stdout), 0;
  std::string output;
  auto files = TakeFlags(args, {{"--output", &output}});
  if (!files.ok()) return Fail(files.status().message(), 2);
  if (files->empty()) return Fail("cpu-baseline: which profiles? (kindling cpu-baseline --help)", 2);
  std::vector<::vcpu::CpuProfile> profiles;
  for (const std::string& f : *files) {
    if (f.rfind("--", 0) == 0) return Fail(absl::StrCat("cpu-baseline: unknown flag ", f), 2);
    absl::StatusOr<::vcpu::CpuProfile> p = ::vcpu::LoadCpuProfileFile(f);
    if (!p.ok()) return Fail(absl::StrCat("cpu-baseline: ", p.status().message()));
    profiles.push_back(*std::move(p));
  }
  absl::StatusOr<::vcpu::Baseline> b = ::vcpu::ComputeBaseline(profiles);
  if (!b.ok()) return Fail(absl::StrCat("cpu-baseline: ", b.status().message()));
  return Write(::vcpu::CpuTemplateToJson(b->cpu_template, b->notes), output);
}

}  // namespace kindling::control
