#include "launcher/control/cpu_pool_cli.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "launcher/control/etcd_pool.h"
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

constexpr char kBaselineUsage[] = R"(usage: kindling cpu-baseline [PROFILE.json...] [--etcd ENDPOINTS --pool NAME] [--output FILE]

Writes the Firecracker-format CPU template that leaves a guest only what
every profiled host offers (docs/design/cpu-pool.md has the rules); boot
the pool's guests with it (kindling run --cpu-template FILE) and they can
migrate to any of its hosts. With --etcd and --pool the profiles are those
the pool's hosts publish on etcd (kindling serve --pool, kindling pool-join),
plus any files named.
)";

constexpr char kJoinUsage[] = R"(usage: kindling pool-join --etcd ENDPOINTS --pool NAME [--profile FILE] [--host NAME] [--ttl-s N]

Publishes a CPU profile (default: this host's, as kindling cpu-profile
writes it) in CPU pool NAME on etcd under a lease of N seconds (default 10)
and keeps it alive until SIGINT/SIGTERM, then revokes it. kindling serve
--pool does the same for a daemon; this is for a host that is not serving
yet, or a profile an operator wants counted.
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

// The profiles pool `pool` publishes on etcd; none without --etcd.
absl::StatusOr<std::vector<::vcpu::CpuProfile>> PoolProfiles(const std::string& etcd,
                                                             const std::string& pool) {
  std::vector<::vcpu::CpuProfile> out;
  if (etcd.empty()) return out;
  absl::StatusOr<std::unique_ptr<EtcdPool>> p = EtcdPool::Connect(etcd, pool);
  if (!p.ok()) return p.status();
  absl::StatusOr<std::vector<EtcdPool::Member>> members = (*p)->Members();
  if (!members.ok()) return members.status();
  if (members->empty()) return absl::NotFoundError(absl::StrCat("pool ", pool, " has no hosts on etcd"));
  for (const EtcdPool::Member& m : *members) {
    absl::StatusOr<::vcpu::CpuProfile> profile = ::vcpu::ParseCpuProfileJson(m.profile_json);
    if (!profile.ok()) {
      return absl::Status(profile.status().code(), absl::StrCat("pool ", pool, " host ", m.host,
                                                                ": ", profile.status().message()));
    }
    out.push_back(*std::move(profile));
  }
  return out;
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
  std::string output, etcd, pool;
  auto files = TakeFlags(args, {{"--output", &output}, {"--etcd", &etcd}, {"--pool", &pool}});
  if (!files.ok()) return Fail(files.status().message(), 2);
  if (etcd.empty() != pool.empty()) return Fail("cpu-baseline: --etcd and --pool go together", 2);
  if (files->empty() && etcd.empty()) {
    return Fail("cpu-baseline: which profiles? (kindling cpu-baseline --help)", 2);
  }
  absl::StatusOr<std::vector<::vcpu::CpuProfile>> published = PoolProfiles(etcd, pool);
  if (!published.ok()) return Fail(absl::StrCat("cpu-baseline: ", published.status().message()));
  std::vector<::vcpu::CpuProfile> profiles = *std::move(published);
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

int PoolJoinMain(const std::vector<std::string>& args) {
  if (WantsHelp(args)) return std::fputs(kJoinUsage, stdout), 0;
  std::string etcd, pool, file, host = HostName(), ttl = "10";
  auto rest = TakeFlags(args, {{"--etcd", &etcd}, {"--pool", &pool}, {"--profile", &file},
                               {"--host", &host}, {"--ttl-s", &ttl}});
  if (!rest.ok()) return Fail(rest.status().message(), 2);
  if (!rest->empty()) return Fail(absl::StrCat("pool-join: unexpected '", (*rest)[0], "'"), 2);
  int64_t ttl_s = 0;
  if (!absl::SimpleAtoi(ttl, &ttl_s) || ttl_s < 2 || ttl_s > 3600) {
    return Fail("pool-join: --ttl-s: expected 2 to 3600 seconds", 2);
  }
  if (etcd.empty() || pool.empty()) return Fail("pool-join: --etcd and --pool are required", 2);
  absl::StatusOr<::vcpu::CpuProfile> profile = absl::InternalError("unset");
  if (!file.empty()) {
    profile = ::vcpu::LoadCpuProfileFile(file);
  } else if (auto kvm = ::vcpu::Kvm::Open(); kvm.ok()) {
    profile = ::vcpu::CollectCpuProfile(**kvm, host);
  } else {
    profile = kvm.status();
  }
  if (!profile.ok()) return Fail(absl::StrCat("pool-join: ", profile.status().message()));
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  absl::StatusOr<std::unique_ptr<EtcdPool>> p = EtcdPool::Connect(etcd, pool);
  if (!p.ok()) return Fail(absl::StrCat("pool-join: ", p.status().message()));
  absl::Status s = (*p)->Join(host, ::vcpu::CpuProfileToJson(*profile), absl::Seconds(ttl_s));
  if (!s.ok()) return Fail(absl::StrCat("pool-join: ", s.message()));
  std::fprintf(stderr, "kindling: %s joined CPU pool %s\n", host.c_str(), pool.c_str());
  int sig = 0;
  sigwait(&stop, &sig);
  s = (*p)->Leave();
  if (!s.ok()) return Fail(absl::StrCat("pool-join: leaving: ", s.message()));
  return 0;
}

}  // namespace kindling::control
