// kindling: the microVM launcher. `kindling run` boots one VM in the
// foreground for CI-style use.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "launcher/cli.h"
#include "launcher/control/vm_process.h"
#include "launcher/microvm.h"
#include "kindling/status_macros.h"
#include "migration/address.h"
#include "migration/snapshot.h"
#include "vcpu/cpu_template.h"
#include "launcher/version.h"

namespace {

using kindling::MicroVm;
using vcpu::VcpuRunner;

constexpr int kExitLaunchFailed = 125;

int Fail(const std::string& message) {
  std::fprintf(stderr, "kindling: error: %s\n", message.c_str());
  return kExitLaunchFailed;
}

// Feeds stdin to the guest's console until EOF.
void ForwardStdin(MicroVm* vm) {
  char buf[256];
  for (;;) {
    ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    std::string_view pending(buf, n);
    while (!pending.empty()) {
      size_t sent = vm->SendConsoleInput(pending);
      pending.remove_prefix(sent);
      if (!pending.empty()) ::usleep(1000);  // the guest has not read yet
    }
  }
}

// The signal that stopped a wait for a migration (128 + it is the exit status).
int g_stopped_by = 0;

// Waits up to a day for the source, giving up at once on a stop signal
// (they are blocked for sigwait; a waiting destination must still obey them).
absl::StatusOr<::migration::IncomingSource> AwaitSource(int listener, const sigset_t& stop) {
  ::migration::AcceptOptions o;
  o.deadline = absl::Now() + absl::Hours(24);
  o.stop = [&stop] {
    timespec now = {};
    int sig = ::sigtimedwait(&stop, nullptr, &now);
    if (sig > 0) g_stopped_by = sig;
    return sig > 0;
  };
  o.ignored = [](const absl::Status& why) {
    std::fprintf(stderr, "kindling: ignoring a connection that is not a migration source: %s\n",
                 std::string(why.message()).c_str());
  };
  absl::StatusOr<::migration::IncomingSource> source = ::migration::AcceptSource(listener, o);
  if (absl::IsCancelled(source.status())) {
    return absl::CancelledError(absl::StrCat("stopped by signal ", g_stopped_by,
                                             " while waiting for a migration"));
  }
  return source;
}

// The VM `kindling run` runs: booted, restored, or received.
absl::StatusOr<std::unique_ptr<MicroVm>> Build(const kindling::RunOptions& opts,
                                               const sigset_t& stop) {
  if (!opts.restore_dir.empty()) {
    return MicroVm::Restore(opts.vm, opts.restore_dir, opts.restore_mode);
  }
  if (opts.incoming.empty()) return MicroVm::Create(opts.vm);
  if (!opts.vm.host_cpu_template.empty()) {  // before a source is kept waiting
    RETURN_IF_ERROR(vcpu::LoadCpuTemplateFile(opts.vm.host_cpu_template).status());
  }
  ASSIGN_OR_RETURN(vm_memory::UniqueFd listener, ::migration::Listen(opts.incoming));
  std::fprintf(stderr, "kindling: waiting for a migration on %s\n", opts.incoming.c_str());
  ASSIGN_OR_RETURN(::migration::IncomingSource source, AwaitSource(listener.get(), stop));
  return MicroVm::Incoming(opts.vm, std::move(source));
}

int Run(const std::vector<std::string>& args) {
  auto opts = kindling::ParseRunFlags(args);
  if (!opts.ok()) return Fail(std::string(opts.status().message()));
  if (opts->help) {
    std::fputs(kindling::RunUsage().c_str(), stdout);
    return 0;
  }
  // Signals are taken by one thread with sigwait; block them everywhere
  // else before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::Time built_from = absl::Now();
  auto vm = Build(*opts, stop_signals);
  if (!vm.ok() && g_stopped_by != 0) {
    std::fprintf(stderr, "kindling: %s\n", std::string(vm.status().message()).c_str());
    return 128 + g_stopped_by;
  }
  if (!vm.ok()) return Fail(std::string(vm.status().message()));
  if (opts->print_stats) {  // the VM's set-up: boot preparation or the restore
    std::fprintf(stderr, "kindling: stat %s_us %lld\n",
                 !opts->incoming.empty() ? "incoming" : opts->restore_dir.empty() ? "create" : "restore",
                 static_cast<long long>(absl::ToInt64Microseconds(absl::Now() - built_from)));
  }
  MicroVm* raw = vm->get();
  std::thread([raw, stop_signals] {
    int sig = 0;
    if (sigwait(&stop_signals, &sig) == 0) {
      raw->Stop({VcpuRunner::StopReason::kRequested, 128 + sig,
                 absl::StrCat("stopped by signal ", sig)});
    }
  }).detach();
  std::thread(ForwardStdin, raw).detach();

  VcpuRunner::Outcome out = (*vm)->Run();
  // A post-copy source is done only when every page came, needed or not.
  if (absl::Status s = (*vm)->WaitPostcopy(absl::Minutes(5)); !s.ok()) {
    std::fprintf(stderr, "kindling: post-copy: %s\n", std::string(s.message()).c_str());
  }
  if (opts->print_stats) {
    if (auto stats = (*vm)->ReadStats(); stats.ok()) {
      for (const char* key : {"exits", "io_exits", "mmio_exits", "irq_exits",
                              "halt_exits", "irq_injections", "insn_emulation",
                              "irq_window_exits", "nmi_injections"}) {
        auto it = stats->find(key);
        if (it != stats->end()) {
          std::fprintf(stderr, "kindling: stat %s %llu\n", key,
                       static_cast<unsigned long long>(it->second));
        }
      }
      std::map<std::string, uint64_t> devices;  // sorted: virtio.blk0.*, virtio.net0.*, ...
      for (const auto& [k, v] : *stats) {
        if (k.rfind("virtio.", 0) == 0) devices[k] = v;
      }
      for (const auto& [k, v] : devices) {
        std::fprintf(stderr, "kindling: stat %s %llu\n", k.c_str(),
                     static_cast<unsigned long long>(v));
      }
      if (const ::migration::PostcopyPager* p = (*vm)->postcopy()) {
        ::migration::PostcopyPager::Stats st = p->stats();
        std::fprintf(stderr, "kindling: stat postcopy_faults %llu postcopy_requests %llu\n",
                     static_cast<unsigned long long>(st.faults),
                     static_cast<unsigned long long>(st.requests));
      }
      // Memory: what the VMM itself holds (anonymous + file) apart from
      // guest RAM (shared memfd pages).
      std::ifstream status("/proc/self/status");
      std::string line;
      while (std::getline(status, line)) {
        if (line.rfind("VmHWM:", 0) == 0 || line.rfind("RssAnon:", 0) == 0 ||
            line.rfind("RssFile:", 0) == 0 || line.rfind("RssShmem:", 0) == 0) {
          std::fprintf(stderr, "kindling: mem %s\n", line.c_str());
        }
      }
    } else {
      std::fprintf(stderr, "kindling: stats unavailable: %s\n",
                   std::string(stats.status().message()).c_str());
    }
  }
  if (out.reason == VcpuRunner::StopReason::kCrash) {
    std::fprintf(stderr, "kindling: guest crashed: %s\n", out.detail.c_str());
  } else if (out.reason == VcpuRunner::StopReason::kRequested) {
    std::fprintf(stderr, "kindling: %s\n", out.detail.c_str());
  }
  return kindling::ExitStatusOf(out);
}

// The daemon and the gRPC client verbs live in kindling-ctl, beside this
// program, so that `kindling run` and every VM process load no gRPC
// (docs/design/control-plane.md).
int ExecControl(char** argv) {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return Fail("cannot find this program (/proc/self/exe)");
  std::string path(self, n);
  path = path.substr(0, path.rfind('/') + 1) + "kindling-ctl";
  ::execv(path.c_str(), argv);
  return Fail(absl::StrCat(path, ": ", std::strerror(errno),
                           " (kindling-ctl must be installed beside kindling)"));
}

bool IsControlVerb(const std::string& verb) {
  for (const char* v : {"serve", "create", "start", "pause", "resume", "shutdown", "kill",
                        "delete", "get", "list", "events", "console", "metrics", "screenshot",
                        "host", "snapshot", "restore", "migrate", "migrate-set", "receive",
                        "cpu-profile", "cpu-baseline", "pool-join"}) {
    if (verb == v) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "help") {
    std::fputs("usage: kindling run --kernel PATH [options]  (kindling run --help)\n"
               "       kindling serve [--listen unix:PATH] [--state-dir DIR]\n"
               "       kindling create|start|pause|resume|shutdown|kill|delete|get|list|\n"
               "                events|console|metrics|host|snapshot|restore ...  (kindling VERB --help)\n"
               "       kindling cpu-profile [--output FILE]\n"
               "       kindling cpu-baseline PROFILE.json... [--etcd E --pool P] [--output FILE]\n"
               "       kindling pool-join --etcd E --pool P [--profile FILE]\n"
               "       kindling --version\n",
               args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version" || args[0] == "version") {
    std::printf("kindling %s (%s)\n", KINDLING_VERSION, KINDLING_LIBRARY_VERSIONS);
    return 0;
  }
  if (args[0] == "run") return Run({args.begin() + 1, args.end()});
  if (args[0] == "vm-process") {
    return kindling::control::VmProcessMain({args.begin() + 1, args.end()});
  }
  if (IsControlVerb(args[0])) return ExecControl(argv);
  return Fail(absl::StrCat("unknown command '", args[0], "' (try: kindling run --help)"));
}
