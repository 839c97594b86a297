#include "launcher/control/daemon.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "launcher/control/services.h"
#include "launcher/control/tls_files.h"

namespace kindling::control {
namespace {

struct ServeFlags {
  std::string listen = "unix:/run/kindling/kindling.sock";
  ServiceOptions service;
  bool stop_vms_on_exit = false;
  std::string tls_cert, tls_key, tls_ca;
  std::string metrics_listen;
  std::string pool, etcd, pool_host;
  int64_t pool_ttl_s = 10;
};

constexpr char kUsage[] = R"(usage: kindling serve [options]

Serves the kindling.v1 gRPC API. Each VM runs in its own process; VMs keep
running when the daemon stops (unless --stop-vms-on-exit), and a restarted
daemon finds them again under --state-dir.

  --listen unix:PATH      (default unix:/run/kindling/kindling.sock, mode 0600)
  --listen tcp:HOST:PORT  only with --tls-cert, --tls-key and --tls-ca
                          (mutual TLS: clients need a certificate the CA signed)
  --state-dir DIR         VM processes' sockets, configs and logs (default /run/kindling)
  --stop-vms-on-exit      end every VM when the daemon gets SIGTERM/SIGINT
  --metrics-listen HOST:PORT  Prometheus metrics (text format) at
                          http://HOST:PORT/metrics; port 0 picks one (logged)
  --pool NAME --etcd ENDPOINTS  join CPU pool NAME on etcd (v3): publish this
                          host's CPU profile under /kindling/pools/NAME/hosts/
                          HOSTNAME with a lease kept alive (--pool-ttl-s, default
                          10), and refuse CreateVm for a VM whose CPU some host
                          of the pool lacks (unless outside_pool); --pool-host NAME
                          names this host there (default: the hostname)
)";

int Fail(const std::string& msg) {
  std::fprintf(stderr, "kindling serve: error: %s\n", msg.c_str());
  return 1;
}

// A unix socket another daemon still answers on is refused; a stale one
// (nobody listening) is removed.
absl::Status ClaimUnixSocket(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("--listen unix:", path, ": path too long"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  if (live) {
    return absl::AlreadyExistsError(
        absl::StrCat(path, ": another kindling daemon is listening there"));
  }
  ::unlink(path.c_str());
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServeFlags& f) {
  if (f.listen.rfind("unix:", 0) == 0) {
    if (!f.tls_cert.empty()) return absl::InvalidArgumentError("--tls-* is for --listen tcp: only");
    RETURN_IF_ERROR(ClaimUnixSocket(f.listen.substr(5)));
    return grpc::InsecureServerCredentials();
  }
  if (f.listen.rfind("tcp:", 0) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen '", f.listen, "': expected unix:PATH or tcp:HOST:PORT"));
  }
  if (f.tls_cert.empty() || f.tls_key.empty() || f.tls_ca.empty()) {
    return absl::InvalidArgumentError(
        "--listen tcp: needs --tls-cert, --tls-key and --tls-ca (mutual TLS)");
  }
  grpc::SslServerCredentialsOptions opts(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ASSIGN_OR_RETURN(TlsFiles pem, ReadTlsFiles(f.tls_cert, f.tls_key, f.tls_ca));
  opts.pem_root_certs = pem.ca;
  opts.pem_key_cert_pairs.push_back({pem.key, pem.cert});
  return grpc::SslServerCredentials(opts);
}

absl::StatusOr<ServeFlags> ParseServeFlags(const std::vector<std::string>& args) {
  ServeFlags f;
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string exe(self, n > 0 ? n : 0);
  f.service.vm_binary = exe.substr(0, exe.rfind('/') + 1) + "kindling";
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    auto value = [&](std::string& out) -> absl::Status {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(a + " needs a value");
      out = args[++i];
      return absl::OkStatus();
    };
    absl::Status s;
    if (a == "--listen") s = value(f.listen);
    else if (a == "--state-dir") s = value(f.service.state_dir);
    else if (a == "--tls-cert") s = value(f.tls_cert);
    else if (a == "--tls-key") s = value(f.tls_key);
    else if (a == "--tls-ca") s = value(f.tls_ca);
    else if (a == "--metrics-listen") s = value(f.metrics_listen);
    else if (a == "--kvm-device") s = value(f.service.kvm_device);
    else if (a == "--vm-binary") s = value(f.service.vm_binary);
    else if (a == "--pool") s = value(f.pool);
    else if (a == "--etcd") s = value(f.etcd);
    else if (a == "--pool-host") s = value(f.pool_host);
    else if (a == "--pool-ttl-s") {
      std::string v;
      s = value(v);
      if (s.ok() && (!absl::SimpleAtoi(v, &f.pool_ttl_s) || f.pool_ttl_s < 2 || f.pool_ttl_s > 3600)) {
        s = absl::InvalidArgumentError("--pool-ttl-s: expected 2 to 3600 seconds");
      }
    } else if (a == "--stop-vms-on-exit") f.stop_vms_on_exit = true;
    else return absl::InvalidArgumentError(absl::StrCat("unknown option '", a, "' (see kindling serve --help)"));
    if (!s.ok()) return s;
  }
  if (f.pool.empty() != f.etcd.empty()) {
    return absl::InvalidArgumentError("--pool and --etcd go together");
  }
  return f;
}

// --pool: this host's profile, published for as long as the daemon runs.
absl::StatusOr<std::unique_ptr<EtcdPool>> JoinPool(const ServeFlags& f, const v1::HostInfo& host) {
  if (f.pool.empty()) return nullptr;
  if (host.cpu_profile_json().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("--pool ", f.pool, ": this host has no CPU profile to publish (KVM: ",
                     host.kvm_usable() ? "no profile" : host.kvm_error(), ")"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<EtcdPool> pool, EtcdPool::Connect(f.etcd, f.pool));
  std::string self = f.pool_host;
  if (self.empty()) {
    char name[256] = {};
    self = ::gethostname(name, sizeof(name) - 1) == 0 ? name : "localhost";
  }
  absl::Status s = pool->Join(self, host.cpu_profile_json(), absl::Seconds(f.pool_ttl_s));
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("--pool ", f.pool, ": ", s.message()));
  std::fprintf(stderr, "kindling serve: joined CPU pool %s as %s\n", f.pool.c_str(), self.c_str());
  return pool;
}

}  // namespace

int ServeMain(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  absl::StatusOr<ServeFlags> f = ParseServeFlags(args);
  if (!f.ok()) return Fail(std::string(f.status().message()));
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::error_code ec;
  std::filesystem::create_directories(f->service.state_dir + "/vms", ec);
  if (ec) return Fail(absl::StrCat("--state-dir ", f->service.state_dir, ": ", ec.message()));
  ::chmod(f->service.state_dir.c_str(), 0700);
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = Credentials(*f);
  if (!creds.ok()) return Fail(std::string(creds.status().message()));

  HostServiceImpl host(f->service.kvm_device);
  VmServiceImpl vms(f->service, &host);
  vms.Recover();
  absl::StatusOr<std::unique_ptr<EtcdPool>> pool = JoinPool(*f, host.info());
  if (!pool.ok()) return Fail(std::string(pool.status().message()));
  vms.SetPool(pool->get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC's address syntax: unix:PATH as ours, HOST:PORT without "tcp:".
  std::string address = f->listen.rfind("tcp:", 0) == 0 ? f->listen.substr(4) : f->listen;
  int port = 0;
  builder.AddListeningPort(address, *creds, &port);
  builder.RegisterService(&host);
  builder.RegisterService(&vms);
  mode_t old = ::umask(0077);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(old);
  if (!server || port == 0) return Fail(absl::StrCat("cannot listen on ", f->listen));
  if (f->listen.rfind("unix:", 0) == 0) ::chmod(f->listen.substr(5).c_str(), 0600);
  std::fprintf(stderr, "kindling serve: listening on %s (state in %s, KVM %s)\n",
               f->listen.c_str(), f->service.state_dir.c_str(),
               host.info().kvm_usable() ? "usable" : host.info().kvm_error().c_str());
  MetricsServer metrics;
  if (!f->metrics_listen.empty()) {
    absl::Status s = metrics.Start(f->metrics_listen, [&vms] { return vms.CollectMetrics(); });
    if (!s.ok()) return Fail(std::string(s.message()));
    std::fprintf(stderr, "kindling serve: metrics on http://%s:%d/metrics\n",
                 f->metrics_listen.substr(0, f->metrics_listen.rfind(':')).c_str(), metrics.port());
  }
  int sig = 0;
  sigwait(&stop, &sig);
  std::fprintf(stderr, "kindling serve: signal %d: stopping%s\n", sig,
               f->stop_vms_on_exit ? " (and every VM)" : "; VMs keep running");
  if (f->stop_vms_on_exit) vms.StopAll();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (f->listen.rfind("unix:", 0) == 0) ::unlink(f->listen.substr(5).c_str());
  return 0;
}

}  // namespace kindling::control
