#include "launcher/control/client.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <cstdlib>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kindling/v1/host.grpc.pb.h"
#include "kindling/v1/vm.grpc.pb.h"
#include "launcher/cli.h"
#include "launcher/control/config.h"
#include "launcher/control/tls_files.h"
#include "kindling/status_macros.h"

namespace kindling::control {
namespace {

constexpr char kDetach = 0x1d;  // Ctrl-]

constexpr char kUsage[] = R"(usage: kindling VERB [--socket unix:PATH] [--output json] ...
       kindling VERB --socket tcp:HOST:PORT --tls-cert F --tls-key F --tls-ca F ...

  create [--id ID] RUN_FLAGS...   a VM from `kindling run` flags; prints its id
  start|pause|resume|shutdown|kill|delete|get ID
  list                            every VM
  events [ID]                     state changes, exits, ... as they happen
  console ID                      the VM's console (replayed from boot, then
                                  live); stdin goes to the guest; on a
                                  terminal Ctrl-] detaches
  snapshot ID DIR [--stay-paused] [--diff]
                                  save the VM (paused meanwhile) into DIR;
                                  resume it with `kindling run --restore DIR`;
                                  --diff: only the pages written since the
                                  VM's last snapshot (its base; keep it)
  restore DIR [--id ID] [--restore-mode eager|lazy|uffd]
                                  a new VM from a snapshot, CREATED (start
                                  resumes the guest); prints its id
  migrate ID --to ADDR [--mode precopy|auto-converge|postcopy] [--max-downtime-ms N]
          [--bandwidth-mibps N] [--postcopy-after-rounds N]
                                  move the running VM to a kindling waiting
                                  on ADDR (unix:PATH or tcp:HOST:PORT, e.g.
                                  `kindling run --incoming ADDR`), printing
                                  progress; the VM stops here once it runs
                                  there. A post-copy switches over by itself
                                  after N rounds of dirtied pages (default
                                  1, 0 to 30)
  migrate-set ID [--bandwidth-mibps N] [--max-downtime-ms N] [--start-postcopy]
          [--cancel]              change the migration that runs: its limits,
                                  an early switch (--mode postcopy), or a
                                  cancel (the VM runs on here)
  receive --listen ADDR [--id ID] a new VM in this daemon that waits on ADDR
                                  for a migration (INCOMING, then RUNNING once
                                  the source handed over); prints its id
  metrics ID                      KVM statistics and VMM memory
  screenshot ID FILE              what the VM's GPU shows (--gpu), as a PNG
                                  written to FILE ('-': stdout)
  host                            this host's KVM, CPU and limits
)";

constexpr int kMaxReceiveBytes = 256 << 20;

struct Common {
  std::string socket;
  std::string tls_cert, tls_key, tls_ca;  // for tcp: (mutual TLS)
  bool json = false;
  std::vector<std::string> rest;
};

Common ParseCommon(const std::vector<std::string>& args) {
  Common c;
  const char* env = std::getenv("KINDLING_SOCKET");
  c.socket = env ? env : "/run/kindling/kindling.sock";
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--socket" && i + 1 < args.size()) {
      c.socket = args[++i];
    } else if (args[i] == "--tls-cert" && i + 1 < args.size()) {
      c.tls_cert = args[++i];
    } else if (args[i] == "--tls-key" && i + 1 < args.size()) {
      c.tls_key = args[++i];
    } else if (args[i] == "--tls-ca" && i + 1 < args.size()) {
      c.tls_ca = args[++i];
    } else if (args[i] == "--output" && i + 1 < args.size() && args[i + 1] == "json") {
      c.json = true;
      ++i;
    } else {
      c.rest.push_back(args[i]);
    }
  }
  if (c.socket.rfind("unix:", 0) != 0 && c.socket.rfind("tcp:", 0) != 0) {
    c.socket = "unix:" + c.socket;
  }
  return c;
}

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

std::string StateName(v1::VmState s) {
  std::string n = v1::VmState_Name(s);
  return n.rfind("VM_STATE_", 0) == 0 ? n.substr(9) : n;
}

void PrintVms(const std::vector<v1::Vm>& vms) {
  std::printf("%-20s %-9s %8s  %s\n", "VM_ID", "STATE", "PID", "EXIT");
  for (const v1::Vm& vm : vms) {
    std::string exit = vm.has_exit_status()
                           ? absl::StrCat(vm.exit_status().code(), " (", vm.exit_status().detail(), ")")
                           : (vm.failure().empty() ? "-" : vm.failure());
    std::printf("%-20s %-9s %8d  %s\n", vm.vm_id().c_str(), StateName(vm.state()).c_str(),
                vm.pid(), exit.c_str());
  }
}

int RpcError(const grpc::Status& s) {
  std::fprintf(stderr, "kindling: %s: %s\n",
               absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())).c_str(),
               s.error_message().c_str());
  return 1;
}

int Usage(const std::string& why) {
  std::fprintf(stderr, "kindling: %s\n%s", why.c_str(), kUsage);
  return 2;
}

int Create(v1::VmService::Stub& stub, const Common& c) {
  std::vector<std::string> flags;
  v1::CreateVmRequest req;
  for (size_t i = 0; i < c.rest.size(); ++i) {
    if (c.rest[i] == "--id" && i + 1 < c.rest.size()) {
      req.set_vm_id(c.rest[++i]);
    } else if (c.rest[i] == "--outside-pool") {
      req.set_outside_pool(true);
    } else {
      flags.push_back(c.rest[i]);
    }
  }
  absl::StatusOr<RunOptions> opts = ParseRunFlags(flags);
  if (!opts.ok()) return Usage(std::string(opts.status().message()));
  absl::StatusOr<v1::VmConfig> config = FromRunOptions(*opts);
  if (!config.ok()) return Usage(std::string(config.status().message()));
  *req.mutable_config() = *config;
  grpc::ClientContext ctx;
  v1::Vm vm;
  grpc::Status s = stub.CreateVm(&ctx, req, &vm);
  if (!s.ok()) return RpcError(s);
  std::printf("%s\n", c.json ? Json(vm).c_str() : vm.vm_id().c_str());
  return 0;
}

std::string MigrationLine(const v1::MigrationProgress& p) {
  if (p.phase() == "done") {
    return absl::StrFormat("migration done: %.1f MiB sent, downtime %.1f ms",
                           p.bytes_sent() / 1048576.0, p.downtime_us() / 1000.0);
  }
  if (p.phase() == "postcopy") {
    return absl::StrFormat("migration post-copy: %.1f MiB sent, %u pages asked for, %u to go",
                           p.bytes_sent() / 1048576.0, p.postcopy_requests(), p.postcopy_left());
  }
  return absl::StrFormat("migration round %u: %.1f MiB sent, %u pages dirtied, %.1f MiB/s%s",
                         p.round(), p.bytes_sent() / 1048576.0, p.dirty_pages(),
                         p.rate_bytes_per_s() / 1048576.0,
                         p.throttle_percent() ? absl::StrCat(", throttle ", p.throttle_percent(), "%")
                                              : std::string());
}

std::string Describe(const v1::Event& e) {
  std::string what;
  if (e.has_state_changed()) {
    what = absl::StrCat("state ", StateName(e.state_changed().from()), " -> ",
                        StateName(e.state_changed().to()));
  } else if (e.has_guest_exited()) {
    what = absl::StrCat("exited ", e.guest_exited().exit_status().code(), " (",
                        e.guest_exited().exit_status().detail(), ")");
  } else if (e.has_process_died()) {
    what = "process died: " + e.process_died().detail();
  } else if (e.has_device_needs_reset()) {
    what = absl::StrCat("device needs reset: ", e.device_needs_reset().device(), ": ",
                        e.device_needs_reset().reason());
  } else if (e.has_migration_progress()) {
    what = MigrationLine(e.migration_progress());
  } else {
    std::map<std::string, uint64_t> sorted(e.balloon_stats().stats().begin(),
                                           e.balloon_stats().stats().end());
    what = "balloon stats";
    for (const auto& [k, v] : sorted) absl::StrAppend(&what, " ", k, "=", v);
  }
  return absl::StrCat(absl::FormatTime("%H:%M:%E3S", absl::FromUnixNanos(e.time_unix_ns()),
                                       absl::LocalTimeZone()),
                      " ", e.vm_id(), " ", what);
}

int Events(v1::VmService::Stub& stub, const Common& c) {
  v1::WatchEventsRequest req;
  if (!c.rest.empty()) req.set_vm_id(c.rest[0]);
  grpc::ClientContext ctx;
  auto reader = stub.WatchEvents(&ctx, req);
  v1::Event e;
  while (reader->Read(&e)) {
    std::printf("%s\n", c.json ? Json(e).c_str() : Describe(e).c_str());
    std::fflush(stdout);
  }
  grpc::Status s = reader->Finish();
  return s.ok() ? 0 : RpcError(s);
}

struct StdinGate {
  absl::Mutex mu;
  bool finished = false;
};

int Console(v1::VmService::Stub& stub, const Common& c) {
  if (c.rest.size() != 1) return Usage("console takes one VM id");
  grpc::ClientContext ctx;
  auto stream = stub.AttachConsole(&ctx);
  v1::ConsoleInput first;
  first.set_vm_id(c.rest[0]);
  stream->Write(first);
  bool tty = ::isatty(STDIN_FILENO);
  termios saved{};
  if (tty) {
    ::tcgetattr(STDIN_FILENO, &saved);
    termios raw = saved;
    ::cfmakeraw(&raw);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    std::fprintf(stderr, "kindling: console of %s; Ctrl-] detaches\r\n", c.rest[0].c_str());
  }
  // The stdin thread outlives this function (it may sit in read()), so it
  // touches the stream and the context only under the gate, and never once
  // the stream is finished: a Write racing Finish, or one after it, aborts
  // inside gRPC (seen once in five nested runs of cli_test).
  auto gate = std::make_shared<StdinGate>();
  std::thread([gate, rw = stream.get(), context = &ctx, tty] {
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
      absl::MutexLock l(&gate->mu);
      if (gate->finished) return;
      if (n <= 0) {
        rw->WritesDone();
        return;
      }
      std::string_view data(buf, n);
      if (tty && data.find(kDetach) != std::string_view::npos) {
        context->TryCancel();
        return;
      }
      v1::ConsoleInput in;
      in.set_data(std::string(data));
      if (!rw->Write(in)) return;
    }
  }).detach();
  v1::ConsoleOutput out;
  while (stream->Read(&out)) {
    (void)!::write(STDOUT_FILENO, out.data().data(), out.data().size());
  }
  {
    absl::MutexLock l(&gate->mu);
    gate->finished = true;
  }
  grpc::Status s = stream->Finish();
  if (tty) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
  return s.ok() || s.error_code() == grpc::StatusCode::CANCELLED ? 0 : RpcError(s);
}

int OneVm(v1::VmService::Stub& stub, const std::string& verb, const Common& c) {
  if (c.rest.size() != 1) return Usage(verb + " takes one VM id");
  v1::VmRef ref;
  ref.set_vm_id(c.rest[0]);
  grpc::ClientContext ctx;
  v1::Vm vm;
  grpc::Status s;
  if (verb == "start") s = stub.StartVm(&ctx, ref, &vm);
  else if (verb == "pause") s = stub.PauseVm(&ctx, ref, &vm);
  else if (verb == "resume") s = stub.ResumeVm(&ctx, ref, &vm);
  else if (verb == "shutdown") s = stub.ShutdownVm(&ctx, ref, &vm);
  else if (verb == "kill") s = stub.KillVm(&ctx, ref, &vm);
  else if (verb == "delete") s = stub.DeleteVm(&ctx, ref, &vm);
  else s = stub.GetVm(&ctx, ref, &vm);
  if (!s.ok()) return RpcError(s);
  if (c.json) std::printf("%s\n", Json(vm).c_str());
  else PrintVms({vm});
  return 0;
}

// A command line's mistake (printed with the usage, exit status 2).
absl::Status Invalid(const std::string& why) { return absl::InvalidArgumentError(why); }

// The daemon needs an absolute path; a relative one is the caller's.
absl::StatusOr<std::string> AbsolutePath(const std::string& path) {
  std::error_code ec;
  std::string abs = std::filesystem::absolute(path, ec).lexically_normal().string();
  if (ec) return Invalid(absl::StrCat(path, ": ", ec.message()));
  return abs;
}

// The verbs that send one request and print the Vm it returns: as a table
// row (kTable), its id alone (kId), or JSON with --output json.
enum class Show { kTable, kId };
template <typename Req>
int CallVm(v1::VmService::Stub& stub, const Common& c, const absl::StatusOr<Req>& req,
           grpc::Status (v1::VmService::Stub::*rpc)(grpc::ClientContext*, const Req&, v1::Vm*),
           Show show) {
  if (!req.ok()) return Usage(std::string(req.status().message()));
  grpc::ClientContext ctx;
  v1::Vm vm;
  grpc::Status s = (stub.*rpc)(&ctx, *req, &vm);
  if (!s.ok()) return RpcError(s);
  if (c.json) std::printf("%s\n", Json(vm).c_str());
  else if (show == Show::kId) std::printf("%s\n", vm.vm_id().c_str());
  else PrintVms({vm});
  return 0;
}

absl::StatusOr<v1::SnapshotVmRequest> ParseSnapshot(const Common& c) {
  v1::SnapshotVmRequest req;
  std::vector<std::string> words;
  for (const std::string& a : c.rest) {
    if (a == "--stay-paused") req.set_stay_paused(true);
    else if (a == "--diff") req.set_diff(true);
    else if (a.rfind("--", 0) == 0) return Invalid(absl::StrCat("snapshot: unknown option ", a));
    else words.push_back(a);
  }
  if (words.size() != 2) return Invalid("snapshot takes a VM id and a directory");
  req.set_vm_id(words[0]);
  absl::StatusOr<std::string> dir = AbsolutePath(words[1]);
  if (!dir.ok()) return Invalid(absl::StrCat("snapshot: ", dir.status().message()));
  req.set_directory(*dir);
  return req;
}

absl::StatusOr<v1::ReceiveMigrationRequest> ParseReceive(const Common& c) {
  v1::ReceiveMigrationRequest req;
  for (size_t i = 0; i < c.rest.size(); ++i) {
    const std::string& a = c.rest[i];
    bool has_next = i + 1 < c.rest.size();
    if (a == "--id" && has_next) req.set_vm_id(c.rest[++i]);
    else if (a == "--listen" && has_next) req.set_listen(c.rest[++i]);
    else return Invalid(absl::StrCat("receive: unexpected ", a));
  }
  if (req.listen().empty()) {
    return Invalid("receive needs --listen ADDR (unix:PATH or tcp:HOST:PORT)");
  }
  return req;
}

absl::StatusOr<v1::RestoreVmRequest> ParseRestore(const Common& c) {
  v1::RestoreVmRequest req;
  std::vector<std::string> words;
  for (size_t i = 0; i < c.rest.size(); ++i) {
    const std::string& a = c.rest[i];
    bool has_next = i + 1 < c.rest.size();
    if (a == "--id" && has_next) {
      req.set_vm_id(c.rest[++i]);
    } else if (a == "--restore-mode" && has_next) {
      const std::string& m = c.rest[++i];
      if (m == "eager") req.set_mode(v1::RESTORE_MODE_EAGER);
      else if (m == "lazy") req.set_mode(v1::RESTORE_MODE_LAZY);
      else if (m == "uffd") req.set_mode(v1::RESTORE_MODE_UFFD);
      else return Invalid(absl::StrCat("--restore-mode '", m, "': expected eager, lazy or uffd"));
    } else if (a.rfind("--", 0) == 0) {
      return Invalid(absl::StrCat("restore: unknown option ", a));
    } else {
      words.push_back(a);
    }
  }
  if (words.size() != 1) return Invalid("restore takes one snapshot directory");
  absl::StatusOr<std::string> dir = AbsolutePath(words[0]);
  if (!dir.ok()) return Invalid(absl::StrCat("restore: ", dir.status().message()));
  req.set_directory(*dir);
  return req;
}

absl::StatusOr<v1::MigrateVmRequest> ParseMigrate(const Common& c) {
  v1::MigrateVmRequest req;
  std::vector<std::string> words;
  for (size_t i = 0; i < c.rest.size(); ++i) {
    const std::string& a = c.rest[i];
    bool has_next = i + 1 < c.rest.size();
    auto number = [&](uint32_t& out) -> absl::Status {
      if (!has_next || !absl::SimpleAtoi(c.rest[++i], &out)) {
        return Invalid(absl::StrCat(a, " needs a number"));
      }
      return absl::OkStatus();
    };
    uint32_t n = 0;
    if (a == "--to" && has_next) {
      req.set_destination(c.rest[++i]);
    } else if (a == "--mode" && has_next) {
      const std::string& m = c.rest[++i];
      if (m == "precopy") req.set_mode(v1::MIGRATION_MODE_PRECOPY);
      else if (m == "auto-converge") req.set_mode(v1::MIGRATION_MODE_AUTO_CONVERGE);
      else if (m == "postcopy") req.set_mode(v1::MIGRATION_MODE_POSTCOPY);
      else return Invalid(absl::StrCat("--mode '", m, "': expected precopy, auto-converge, postcopy"));
    } else if (a == "--max-downtime-ms") {
      RETURN_IF_ERROR(number(n));
      req.set_max_downtime_ms(n);
    } else if (a == "--bandwidth-mibps") {
      RETURN_IF_ERROR(number(n));
      req.set_bandwidth_mibps(n);
    } else if (a == "--postcopy-after-rounds") {
      RETURN_IF_ERROR(number(n));
      req.set_postcopy_after_rounds(n);
    } else if (a.rfind("--", 0) == 0) {
      return Invalid(absl::StrCat("migrate: unknown option ", a));
    } else {
      words.push_back(a);
    }
  }
  if (words.size() != 1 || req.destination().empty()) {
    return Invalid("migrate takes a VM id and --to ADDR");
  }
  req.set_vm_id(words[0]);
  return req;
}

// MigrateVm, with the VM's progress events printed on stderr meanwhile.
int Migrate(v1::VmService::Stub& stub, const Common& c) {
  absl::StatusOr<v1::MigrateVmRequest> req = ParseMigrate(c);
  if (!req.ok()) return Usage(std::string(req.status().message()));
  grpc::ClientContext watch_ctx;
  v1::WatchEventsRequest wreq;
  wreq.set_vm_id(req->vm_id());
  auto reader = stub.WatchEvents(&watch_ctx, wreq);
  // The daemon sends the stream's metadata once it has subscribed: no
  // progress event can come before it.
  reader->WaitForInitialMetadata();
  absl::Notification done;
  std::thread progress([&] {
    v1::Event e;
    while (reader->Read(&e)) {
      if (!e.has_migration_progress()) continue;
      std::fprintf(stderr, "kindling: %s\n", MigrationLine(e.migration_progress()).c_str());
      if (e.migration_progress().phase() == "done" && !done.HasBeenNotified()) done.Notify();
    }
  });
  grpc::ClientContext ctx;
  v1::Vm vm;
  grpc::Status s = stub.MigrateVm(&ctx, *req, &vm);
  // The last event was published before the reply; it may still be on its way.
  if (s.ok()) done.WaitForNotificationWithTimeout(absl::Seconds(5));
  watch_ctx.TryCancel();
  progress.join();
  (void)reader->Finish();
  if (!s.ok()) return RpcError(s);
  if (c.json) std::printf("%s\n", Json(vm).c_str());
  else PrintVms({vm});
  return 0;
}

absl::StatusOr<v1::UpdateMigrationRequest> ParseMigrateSet(const Common& c) {
  v1::UpdateMigrationRequest req;
  std::vector<std::string> words;
  for (size_t i = 0; i < c.rest.size(); ++i) {
    const std::string& a = c.rest[i];
    uint32_t n = 0;
    auto number = [&]() -> absl::Status {
      if (i + 1 >= c.rest.size() || !absl::SimpleAtoi(c.rest[++i], &n)) {
        return Invalid(absl::StrCat(a, " needs a number"));
      }
      return absl::OkStatus();
    };
    if (a == "--bandwidth-mibps") {
      RETURN_IF_ERROR(number());
      req.set_bandwidth_mibps(n);
    } else if (a == "--max-downtime-ms") {
      RETURN_IF_ERROR(number());
      req.set_max_downtime_ms(n);
    } else if (a == "--start-postcopy") {
      req.set_start_postcopy(true);
    } else if (a == "--cancel") {
      req.set_cancel(true);
    } else if (a.rfind("--", 0) == 0) {
      return Invalid(absl::StrCat("migrate-set: unknown option ", a));
    } else {
      words.push_back(a);
    }
  }
  if (words.size() != 1) return Invalid("migrate-set takes one VM id");
  req.set_vm_id(words[0]);
  return req;
}

int List(v1::VmService::Stub& stub, const Common& c) {
  grpc::ClientContext ctx;
  v1::ListVmsResponse resp;
  grpc::Status s = stub.ListVms(&ctx, v1::ListVmsRequest(), &resp);
  if (!s.ok()) return RpcError(s);
  if (c.json) std::printf("%s\n", Json(resp).c_str());
  else PrintVms({resp.vms().begin(), resp.vms().end()});
  return 0;
}

int Metrics(v1::VmService::Stub& stub, const Common& c) {
  if (c.rest.size() != 1) return Usage("metrics takes one VM id");
  v1::VmRef ref;
  ref.set_vm_id(c.rest[0]);
  grpc::ClientContext ctx;
  v1::GetMetricsResponse resp;
  grpc::Status s = stub.GetMetrics(&ctx, ref, &resp);
  if (!s.ok()) return RpcError(s);
  if (c.json) {
    std::printf("%s\n", Json(resp).c_str());
    return 0;
  }
  std::map<std::string, uint64_t> sorted(resp.counters().begin(), resp.counters().end());
  for (const auto& [k, v] : sorted) std::printf("%-28s %llu\n", k.c_str(), static_cast<unsigned long long>(v));
  return 0;
}

int Screenshot(v1::VmService::Stub& stub, const Common& c) {
  if (c.rest.size() != 2) return Usage("screenshot takes a VM id and a file ('-': stdout)");
  v1::VmRef ref;
  ref.set_vm_id(c.rest[0]);
  grpc::ClientContext ctx;
  v1::GetScreenshotResponse resp;
  grpc::Status s = stub.GetScreenshot(&ctx, ref, &resp);
  if (!s.ok()) return RpcError(s);
  const std::string& file = c.rest[1];
  FILE* f = file == "-" ? stdout : std::fopen(file.c_str(), "wb");
  if (f == nullptr) {
    std::fprintf(stderr, "kindling: screenshot: %s: %s\n", file.c_str(), std::strerror(errno));
    return 1;
  }
  bool ok = std::fwrite(resp.png().data(), 1, resp.png().size(), f) == resp.png().size();
  ok = (f == stdout ? std::fflush(f) : std::fclose(f)) == 0 && ok;
  if (!ok) {
    std::fprintf(stderr, "kindling: screenshot: writing %s failed\n", file.c_str());
    return 1;
  }
  if (file != "-") {
    std::printf("%s: %ux%u, %zu bytes\n", file.c_str(), resp.width(), resp.height(),
                resp.png().size());
  }
  return 0;
}

int Host(const std::shared_ptr<grpc::Channel>& ch, const Common& c) {
  auto stub = v1::HostService::NewStub(ch);
  grpc::ClientContext ctx;
  v1::HostInfo info;
  grpc::Status s = stub->GetHostInfo(&ctx, v1::GetHostInfoRequest(), &info);
  if (!s.ok()) return RpcError(s);
  if (c.json) {
    std::printf("%s\n", Json(info).c_str());
    return 0;
  }
  std::printf("version     %s\nkvm         %s\ncpu         %s (%s)\nmemory      %llu MiB\n"
              "max vcpus   %u\ncpuid       %d leaves\n",
              info.version().c_str(),
              info.kvm_usable() ? absl::StrCat("usable, API ", info.kvm_api_version()).c_str()
                                : info.kvm_error().c_str(),
              info.cpu_model().c_str(), info.cpu_vendor().c_str(),
              static_cast<unsigned long long>(info.memory_mib()), info.max_vcpus(),
              info.supported_cpuid_size());
  return 0;
}

}  // namespace

int ClientMain(const std::vector<std::string>& args) {
  if (args.empty()) return Usage("which verb?");
  const std::string& verb = args[0];
  Common c = ParseCommon(args);
  for (const auto& a : c.rest) {
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  std::string target = c.socket;
  if (target.rfind("tcp:", 0) == 0) {
    target = target.substr(4);
    absl::StatusOr<TlsFiles> pem = ReadTlsFiles(c.tls_cert, c.tls_key, c.tls_ca);
    if (!pem.ok()) {
      return Usage(absl::StrCat("--socket tcp: needs --tls-cert, --tls-key and --tls-ca: ",
                                pem.status().message()));
    }
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = pem->ca;
    o.pem_private_key = pem->key;
    o.pem_cert_chain = pem->cert;
    creds = grpc::SslCredentials(o);
  }
  // Screenshots of large scanouts pass gRPC's default 4 MiB.
  grpc::ChannelArguments args_in;
  args_in.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  std::shared_ptr<grpc::Channel> ch = grpc::CreateCustomChannel(target, creds, args_in);
  if (verb == "host") return Host(ch, c);
  auto stub = v1::VmService::NewStub(ch);
  if (verb == "create") return Create(*stub, c);
  if (verb == "list") return List(*stub, c);
  if (verb == "events") return Events(*stub, c);
  if (verb == "console") return Console(*stub, c);
  if (verb == "metrics") return Metrics(*stub, c);
  if (verb == "screenshot") return Screenshot(*stub, c);
  using Stub = v1::VmService::Stub;
  if (verb == "snapshot") {
    return CallVm(*stub, c, ParseSnapshot(c), &Stub::SnapshotVm, Show::kTable);
  }
  if (verb == "restore") return CallVm(*stub, c, ParseRestore(c), &Stub::RestoreVm, Show::kId);
  if (verb == "receive") {
    return CallVm(*stub, c, ParseReceive(c), &Stub::ReceiveMigration, Show::kId);
  }
  if (verb == "migrate") return Migrate(*stub, c);
  if (verb == "migrate-set") {
    return CallVm(*stub, c, ParseMigrateSet(c), &Stub::UpdateMigration, Show::kTable);
  }
  for (const char* v : {"start", "pause", "resume", "shutdown", "kill", "delete", "get"}) {
    if (verb == v) return OneVm(*stub, verb, c);
  }
  return Usage(absl::StrCat("unknown verb '", verb, "'"));
}

}  // namespace kindling::control
