#include "launcher/control/services.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "kindling/status_macros.h"
#include "launcher/control/config.h"
#include "launcher/microvm.h"
#include "launcher/version.h"
#include "migration/address.h"
#include "vcpu/cpu_compat.h"
#include "vcpu/cpu_profile.h"
#include "vcpu/cpu_template.h"
#include "vcpu/kvm.h"

namespace kindling::control {
namespace {

namespace fs = std::filesystem;
constexpr absl::Duration kPoll = absl::Milliseconds(200);

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

std::string RandomId() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x", rd(), rd());
}

uint64_t ProcStatusKib(int pid, const std::string& key) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string k;
  uint64_t v = 0;
  while (in >> k) {
    if (k == key + ":") return (in >> v) ? v : 0;
    in.ignore(1 << 12, '\n');
  }
  return 0;
}

double ProcessCpuSeconds(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<std::string> f = absl::StrSplit(text.substr(paren + 2), ' ');
  uint64_t utime = 0, stime = 0;  // fields 14 and 15, 12th and 13th after ')'
  if (f.size() < 13 || !absl::SimpleAtoi(f[11], &utime) || !absl::SimpleAtoi(f[12], &stime)) {
    return 0;
  }
  return static_cast<double>(utime + stime) / ::sysconf(_SC_CLK_TCK);
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "";
}

std::string HostName() {
  char name[256] = {};
  return ::gethostname(name, sizeof(name) - 1) == 0 ? name : "localhost";
}

void FillKvm(const std::string& device, v1::HostInfo& out) {
  absl::StatusOr<std::unique_ptr<::vcpu::Kvm>> kvm = ::vcpu::Kvm::Open(device);
  if (!kvm.ok()) {
    out.set_kvm_error(absl::StrCat(device, ": ", kvm.status().message()));
    return;
  }
  out.set_kvm_api_version(::ioctl((*kvm)->fd(), KVM_GET_API_VERSION, 0));
  int max = (*kvm)->CheckExtension(KVM_CAP_MAX_VCPUS);
  out.set_max_vcpus(std::min<uint32_t>(max > 0 ? max : 1, kMaxVcpus));
  bool all = true;
  for (const ::vcpu::NamedCapability& c : ::vcpu::RequiredCapabilities()) {
    int v = (*kvm)->CheckExtension(c.cap);
    (*out.mutable_capabilities())[c.name] = v;
    if (v <= 0) {
      all = false;
      out.set_kvm_error(absl::StrCat(device, ": KVM lacks ", c.name));
    }
  }
  if (auto cpuid = (*kvm)->GetSupportedCpuid(); cpuid.ok()) {
    for (const kvm_cpuid_entry2& e : *cpuid) {
      v1::CpuidEntry* p = out.add_supported_cpuid();
      p->set_function(e.function);
      p->set_index(e.index);
      p->set_eax(e.eax);
      p->set_ebx(e.ebx);
      p->set_ecx(e.ecx);
      p->set_edx(e.edx);
      if (e.function == 0) {
        char vendor[13] = {};
        std::memcpy(vendor, &e.ebx, 4);
        std::memcpy(vendor + 4, &e.edx, 4);
        std::memcpy(vendor + 8, &e.ecx, 4);
        out.set_cpu_vendor(vendor);
      }
    }
  }
  out.set_kvm_usable(all);
  if (absl::StatusOr<::vcpu::CpuProfile> p = ::vcpu::CollectCpuProfile(**kvm, HostName()); p.ok()) {
    out.set_cpu_profile_json(::vcpu::CpuProfileToJson(*p));
  }
}

// A VM's CPU (this host's, narrowed by its template) must be one every host
// of the pool can give: otherwise it could not migrate there.
absl::Status CheckWithinPool(const v1::HostInfo& host, const std::string& cpu_template,
                             const EtcdPool& pool) {
  ASSIGN_OR_RETURN(::vcpu::CpuProfile self, ::vcpu::ParseCpuProfileJson(host.cpu_profile_json()));
  ::vcpu::CpuidTable guest = ::vcpu::ProfileCpuid(self);
  if (!cpu_template.empty()) {
    ASSIGN_OR_RETURN(::vcpu::CpuTemplate t, ::vcpu::ParseCpuTemplateJson(cpu_template));
    RETURN_IF_ERROR(::vcpu::ApplyCpuTemplate(guest, t));
  }
  absl::StatusOr<std::vector<EtcdPool::Member>> members = pool.Members();
  if (!members.ok()) {
    return absl::UnavailableError(absl::StrCat("the CPU pool's members: ", members.status().message()));
  }
  for (const EtcdPool::Member& m : *members) {
    absl::StatusOr<::vcpu::CpuProfile> p = ::vcpu::ParseCpuProfileJson(m.profile_json);
    if (!p.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("pool host ", m.host, ": ", p.status().message()));
    }
    absl::Status s = ::vcpu::CheckGuestCpuid(guest, ::vcpu::ProfileCpuid(*p), m.host);
    if (!s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the VM's CPU is not within its CPU pool (boot it with the pool's baseline, kindling "
          "cpu-baseline --etcd ... --pool ..., or create it with outside_pool): ", s.message()));
    }
  }
  return absl::OkStatus();
}

// A snapshot directory named in a request: the daemon resolves nothing
// relative to its own working directory.
absl::Status ValidateDirectory(const std::string& dir) {
  if (dir.empty() || dir[0] != '/' || dir.size() > 4096 || dir.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("directory: must be an absolute path of at most 4096 bytes");
  }
  return absl::OkStatus();
}

}  // namespace

HostServiceImpl::HostServiceImpl(std::string kvm_device) {
  info_.set_version(KINDLING_VERSION);
  info_.set_cpu_model(CpuModel());
  info_.set_memory_mib(HostMemoryMib());
  FillKvm(kvm_device, info_);
}

grpc::Status HostServiceImpl::GetHostInfo(grpc::ServerContext*, const v1::GetHostInfoRequest*,
                                          v1::HostInfo* out) {
  *out = info_;
  return grpc::Status::OK;
}

VmServiceImpl::VmServiceImpl(ServiceOptions options, const HostServiceImpl* host)
    : options_(std::move(options)), host_(host) {}

void VmServiceImpl::Recover() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.state_dir + "/vms", ec)) {
    std::string id = entry.path().filename();
    if (!ValidateVmId(id).ok()) continue;
    v1::VmConfig config;
    std::ifstream in(entry.path() / "config.pb", std::ios::binary);
    if (!config.ParseFromIstream(&in)) continue;
    auto h = VmHandle::Attach(id, entry.path(), std::move(config), &hub_);
    absl::MutexLock l(&mu_);
    vms_[id] = std::move(h);
  }
}

void VmServiceImpl::StopAll() {
  std::map<std::string, std::shared_ptr<VmHandle>> vms;
  {
    absl::MutexLock l(&mu_);
    vms = vms_;
  }
  for (auto& [id, h] : vms) {
    if (h) (void)h->Call(Type::kQuit);
  }
}

std::vector<VmMetrics> VmServiceImpl::CollectMetrics() {
  std::vector<std::shared_ptr<VmHandle>> handles;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [id, h] : vms_) {
      if (h) handles.push_back(h);
    }
  }
  std::vector<VmMetrics> out;
  for (const auto& h : handles) {
    v1::Vm vm = h->Snapshot();
    VmMetrics m;
    m.vm_id = vm.vm_id();
    m.state = absl::AsciiStrToLower(v1::VmState_Name(vm.state()).substr(9));
    if (absl::StatusOr<Reply> r = h->Call(Type::kGetStats); r.ok() && r->status.ok()) {
      if (absl::StatusOr<Counters> c = DecodeCounters(r->body); c.ok()) {
        m.kvm.insert(c->begin(), c->end());
      }
    }
    if (vm.pid() > 0) {
      m.has_process = true;
      m.rss_bytes = ProcStatusKib(vm.pid(), "VmRSS") * 1024;
      m.cpu_seconds = ProcessCpuSeconds(vm.pid());
    }
    out.push_back(std::move(m));
  }
  return out;
}

absl::StatusOr<std::shared_ptr<VmHandle>> VmServiceImpl::Find(const std::string& vm_id) {
  RETURN_IF_ERROR(ValidateVmId(vm_id));
  absl::MutexLock l(&mu_);
  auto it = vms_.find(vm_id);
  if (it == vms_.end() || !it->second) {
    return absl::NotFoundError(absl::StrCat("no VM '", vm_id, "'"));
  }
  return it->second;
}

absl::StatusOr<v1::Vm> VmServiceImpl::Create(const v1::CreateVmRequest& req) {
  const v1::HostInfo& host = host_->info();
  if (!host.kvm_usable()) {
    return absl::FailedPreconditionError(absl::StrCat("this host cannot run VMs: ", host.kvm_error()));
  }
  std::string id = req.vm_id().empty() ? RandomId() : req.vm_id();
  RETURN_IF_ERROR(ValidateVmId(id));
  RETURN_IF_ERROR(ValidateVmConfig(req.config(), host.memory_mib(), host.max_vcpus()));
  if (pool_ != nullptr && !req.outside_pool()) {
    RETURN_IF_ERROR(CheckWithinPool(host, req.config().cpu_template(), *pool_));
  }
  std::string dir = options_.state_dir + "/vms/" + id;
  ASSIGN_OR_RETURN(std::vector<std::string> flags,
                   ToRunFlags(req.config(), dir + "/cpu_template.json"));
  return Launch(id, req.config(), flags);
}

absl::StatusOr<v1::Vm> VmServiceImpl::Restore(const v1::RestoreVmRequest& req) {
  std::string id = req.vm_id().empty() ? RandomId() : req.vm_id();
  RETURN_IF_ERROR(ValidateVmId(id));
  const std::string& from = req.directory();
  RETURN_IF_ERROR(ValidateDirectory(from));
  std::string mode;
  switch (req.mode()) {
    case v1::RESTORE_MODE_UNSPECIFIED:
    case v1::RESTORE_MODE_EAGER: mode = "eager"; break;
    case v1::RESTORE_MODE_LAZY: mode = "lazy"; break;
    case v1::RESTORE_MODE_UFFD: mode = "uffd"; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("mode: ", req.mode(), " is not a RestoreMode"));
  }
  const v1::HostInfo& host = host_->info();
  if (!host.kvm_usable()) {
    return absl::FailedPreconditionError(absl::StrCat("this host cannot run VMs: ", host.kvm_error()));
  }
  // The VM process reads and validates the snapshot; its error comes back.
  return Launch(id, v1::VmConfig(), {"--restore", from, "--restore-mode", mode});
}

absl::StatusOr<v1::Vm> VmServiceImpl::Launch(const std::string& id, const v1::VmConfig& config,
                                             const std::vector<std::string>& flags,
                                             v1::VmState initial_state) {
  std::string dir = options_.state_dir + "/vms/" + id;
  {
    absl::MutexLock l(&mu_);
    if (!vms_.emplace(id, nullptr).second) {
      return absl::AlreadyExistsError(absl::StrCat("a VM '", id, "' exists"));
    }
  }
  auto undo = [&](absl::Status s) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    absl::MutexLock l(&mu_);
    vms_.erase(id);
    return s;
  };
  if (::mkdir(dir.c_str(), 0700) != 0) {
    return undo(absl::ErrnoToStatus(errno, absl::StrCat("mkdir ", dir)));
  }
  std::ofstream(dir + "/config.pb", std::ios::binary) << config.SerializeAsString();
  if (!config.cpu_template().empty()) {
    std::ofstream(dir + "/cpu_template.json") << config.cpu_template();
  }
  absl::StatusOr<std::shared_ptr<VmHandle>> h =
      VmHandle::Spawn({id, dir, options_.vm_binary, flags, config, initial_state}, &hub_);
  if (!h.ok()) return undo(h.status());
  v1::Vm vm = (*h)->Snapshot();
  absl::MutexLock l(&mu_);
  vms_[id] = *std::move(h);
  return vm;
}

absl::StatusOr<v1::Vm> VmServiceImpl::Lifecycle(const std::string& vm_id, Type command,
                                                std::string payload, absl::Duration timeout) {
  ASSIGN_OR_RETURN(std::shared_ptr<VmHandle> h, Find(vm_id));
  ASSIGN_OR_RETURN(Reply r, h->Call(command, std::move(payload), timeout));
  if (!r.status.ok()) {
    v1::Vm now = h->Snapshot();
    return absl::Status(r.status.code(),
                        absl::StrCat("VM '", vm_id, "' is ", v1::VmState_Name(now.state()),
                                     ": ", r.status.message()));
  }
  if (command == Type::kKill || command == Type::kMigrate) {
    h->WaitForState(IsStopped, absl::Seconds(5));
  }
  return h->Snapshot();
}

grpc::Status VmServiceImpl::CreateVm(grpc::ServerContext*, const v1::CreateVmRequest* req,
                                     v1::Vm* out) {
  absl::StatusOr<v1::Vm> vm = Create(*req);
  if (vm.ok()) *out = *vm;
  return ToGrpc(vm.status());
}

#define KINDLING_LIFECYCLE_RPC(Name, command)                                             \
  grpc::Status VmServiceImpl::Name(grpc::ServerContext*, const v1::VmRef* ref, v1::Vm* out) { \
    absl::StatusOr<v1::Vm> vm = Lifecycle(ref->vm_id(), command);                          \
    if (vm.ok()) *out = *vm;                                                               \
    return ToGrpc(vm.status());                                                            \
  }
KINDLING_LIFECYCLE_RPC(StartVm, Type::kStart)
KINDLING_LIFECYCLE_RPC(PauseVm, Type::kPause)
KINDLING_LIFECYCLE_RPC(ResumeVm, Type::kResume)
KINDLING_LIFECYCLE_RPC(ShutdownVm, Type::kPowerButton)
KINDLING_LIFECYCLE_RPC(KillVm, Type::kKill)
#undef KINDLING_LIFECYCLE_RPC

absl::StatusOr<v1::Vm> VmServiceImpl::Snapshot(const v1::SnapshotVmRequest& req) {
  const std::string& dir = req.directory();
  RETURN_IF_ERROR(ValidateDirectory(dir));
  // A snapshot writes all of guest RAM: allow it minutes, not seconds.
  return Lifecycle(req.vm_id(), Type::kSnapshot,
                   EncodeSnapshotRequest({dir, req.stay_paused(), req.diff()}), absl::Minutes(10));
}

absl::StatusOr<v1::Vm> VmServiceImpl::Receive(const v1::ReceiveMigrationRequest& req) {
  std::string id = req.vm_id().empty() ? RandomId() : req.vm_id();
  RETURN_IF_ERROR(ValidateVmId(id));
  if (req.listen().size() > 4096) return absl::InvalidArgumentError("listen: more than 4096 bytes");
  if (auto a = ::migration::ParseStreamAddress(req.listen()); !a.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("listen: ", a.status().message()));
  }
  const v1::HostInfo& host = host_->info();
  if (!host.kvm_usable()) {
    return absl::FailedPreconditionError(absl::StrCat("this host cannot run VMs: ", host.kvm_error()));
  }
  // The VM process listens before it reports ready (an address in use
  // fails the call); the VM itself comes with the stream.
  return Launch(id, v1::VmConfig(), {"--incoming", req.listen()}, v1::VM_STATE_INCOMING);
}

grpc::Status VmServiceImpl::ReceiveMigration(grpc::ServerContext*,
                                             const v1::ReceiveMigrationRequest* req, v1::Vm* out) {
  absl::StatusOr<v1::Vm> vm = Receive(*req);
  if (vm.ok()) *out = *vm;
  return ToGrpc(vm.status());
}

grpc::Status VmServiceImpl::RestoreVm(grpc::ServerContext*, const v1::RestoreVmRequest* req,
                                      v1::Vm* out) {
  absl::StatusOr<v1::Vm> vm = Restore(*req);
  if (vm.ok()) *out = *vm;
  return ToGrpc(vm.status());
}

absl::StatusOr<v1::Vm> VmServiceImpl::Migrate(const v1::MigrateVmRequest& req) {
  RETURN_IF_ERROR(ValidateVmId(req.vm_id()));
  if (req.destination().size() > 4096) {
    return absl::InvalidArgumentError("destination: more than 4096 bytes");
  }
  if (auto a = ::migration::ParseStreamAddress(req.destination()); !a.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("destination: ", a.status().message()));
  }
  MigrateRequest m{req.destination(), 0, req.max_downtime_ms() ? req.max_downtime_ms() : 300,
                   req.bandwidth_mibps()};
  switch (req.mode()) {
    case v1::MIGRATION_MODE_UNSPECIFIED:
    case v1::MIGRATION_MODE_PRECOPY: break;
    case v1::MIGRATION_MODE_AUTO_CONVERGE: m.mode = 1; break;
    case v1::MIGRATION_MODE_POSTCOPY: m.mode = 2; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("mode: ", req.mode(), " is not a MigrationMode"));
  }
  if (m.max_downtime_ms > 60000) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_downtime_ms: ", m.max_downtime_ms, " is above the maximum of 60000"));
  }
  if (m.bandwidth_mibps > (1u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bandwidth_mibps: ", m.bandwidth_mibps, " is above the maximum of 1048576"));
  }
  if (req.has_postcopy_after_rounds()) {
    if (m.mode != 2) {
      return absl::InvalidArgumentError(
          "postcopy_after_rounds: only for mode MIGRATION_MODE_POSTCOPY");
    }
    if (req.postcopy_after_rounds() > kMaxPostcopyAfterRounds) {
      return absl::InvalidArgumentError(absl::StrCat("postcopy_after_rounds: ",
                                                     req.postcopy_after_rounds(),
                                                     " is above the maximum of ",
                                                     kMaxPostcopyAfterRounds));
    }
    m.postcopy_after_rounds = static_cast<uint8_t>(req.postcopy_after_rounds());
  }
  return Lifecycle(req.vm_id(), Type::kMigrate, EncodeMigrateRequest(m), absl::Hours(1));
}

grpc::Status VmServiceImpl::MigrateVm(grpc::ServerContext*, const v1::MigrateVmRequest* req,
                                      v1::Vm* out) {
  absl::StatusOr<v1::Vm> vm = Migrate(*req);
  if (vm.ok()) *out = *vm;
  return ToGrpc(vm.status());
}

absl::StatusOr<v1::Vm> VmServiceImpl::UpdateMigration(const v1::UpdateMigrationRequest& req) {
  RETURN_IF_ERROR(ValidateVmId(req.vm_id()));
  MigrateSetRequest m;
  if (req.has_bandwidth_mibps()) {
    if (req.bandwidth_mibps() > (1u << 20)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bandwidth_mibps: ", req.bandwidth_mibps(), " is above the maximum of 1048576"));
    }
    m.bandwidth_mibps = req.bandwidth_mibps();
  }
  if (req.has_max_downtime_ms()) {
    if (req.max_downtime_ms() == 0 || req.max_downtime_ms() > 60000) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_downtime_ms: ", req.max_downtime_ms(), " is outside 1 to 60000"));
    }
    m.max_downtime_ms = req.max_downtime_ms();
  }
  m.start_postcopy = req.start_postcopy();
  m.cancel = req.cancel();
  if (!m.bandwidth_mibps && !m.max_downtime_ms && !m.start_postcopy && !m.cancel) {
    return absl::InvalidArgumentError(
        "nothing to change: set bandwidth_mibps, max_downtime_ms, start_postcopy or cancel");
  }
  return Lifecycle(req.vm_id(), Type::kMigrateSet, EncodeMigrateSetRequest(m));
}

grpc::Status VmServiceImpl::UpdateMigration(grpc::ServerContext*,
                                            const v1::UpdateMigrationRequest* req, v1::Vm* out) {
  absl::StatusOr<v1::Vm> vm = UpdateMigration(*req);
  if (vm.ok()) *out = *vm;
  return ToGrpc(vm.status());
}

grpc::Status VmServiceImpl::SnapshotVm(grpc::ServerContext*, const v1::SnapshotVmRequest* req,
                                       v1::Vm* out) {
  absl::StatusOr<v1::Vm> vm = Snapshot(*req);
  if (vm.ok()) *out = *vm;
  return ToGrpc(vm.status());
}

grpc::Status VmServiceImpl::DeleteVm(grpc::ServerContext*, const v1::VmRef* ref, v1::Vm* out) {
  absl::StatusOr<std::shared_ptr<VmHandle>> h = Find(ref->vm_id());
  if (!h.ok()) return ToGrpc(h.status());
  {
    absl::MutexLock l(&mu_);
    vms_.erase(ref->vm_id());
  }
  (void)(*h)->Call(Type::kQuit);  // a process already gone is fine
  (*h)->WaitGone(absl::Seconds(5));
  *out = (*h)->Snapshot();
  std::error_code ec;
  fs::remove_all((*h)->dir(), ec);
  return grpc::Status::OK;
}

grpc::Status VmServiceImpl::GetVm(grpc::ServerContext*, const v1::VmRef* ref, v1::Vm* out) {
  absl::StatusOr<std::shared_ptr<VmHandle>> h = Find(ref->vm_id());
  if (!h.ok()) return ToGrpc(h.status());
  *out = (*h)->Snapshot();
  return grpc::Status::OK;
}

grpc::Status VmServiceImpl::ListVms(grpc::ServerContext*, const v1::ListVmsRequest*,
                                    v1::ListVmsResponse* out) {
  absl::MutexLock l(&mu_);
  for (const auto& [id, h] : vms_) {
    if (h) *out->add_vms() = h->Snapshot();
  }
  return grpc::Status::OK;
}

grpc::Status VmServiceImpl::WatchEvents(grpc::ServerContext* ctx,
                                        const v1::WatchEventsRequest* req,
                                        grpc::ServerWriter<v1::Event>* writer) {
  if (!req->vm_id().empty()) {
    if (absl::Status s = ValidateVmId(req->vm_id()); !s.ok()) return ToGrpc(s);
  }
  auto sub = hub_.Subscribe(req->vm_id());
  // Says "subscribed" to a client that waits for it (WaitForInitialMetadata)
  // before it starts what it wants to watch.
  writer->SendInitialMetadata();
  while (!ctx->IsCancelled()) {
    std::deque<v1::Event> batch;
    {
      absl::MutexLock l(&sub->mu);
      sub->mu.AwaitWithTimeout(absl::Condition(
                                   +[](std::deque<v1::Event>* q) { return !q->empty(); },
                                   &sub->queue),
                               kPoll);
      batch.swap(sub->queue);
    }
    bool ok = true;
    for (const v1::Event& e : batch) ok = ok && writer->Write(e);
    if (!ok) break;
  }
  hub_.Unsubscribe(sub);
  return grpc::Status::OK;
}

grpc::Status VmServiceImpl::AttachConsole(
    grpc::ServerContext* ctx, grpc::ServerReaderWriter<v1::ConsoleOutput, v1::ConsoleInput>* stream) {
  v1::ConsoleInput first;
  if (!stream->Read(&first)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "AttachConsole: no first message");
  }
  absl::StatusOr<std::shared_ptr<VmHandle>> found = Find(first.vm_id());
  if (!found.ok()) return ToGrpc(found.status());
  std::shared_ptr<VmHandle> h = *found;
  auto sink = std::make_shared<ConsoleSink>();
  std::string replay = h->AttachConsole(sink);
  bool ok = true;
  for (size_t off = 0; ok && off < replay.size(); off += 16384) {
    v1::ConsoleOutput o;
    o.set_data(replay.substr(off, 16384));
    o.set_replay(true);
    ok = stream->Write(o);
  }
  std::atomic<bool> input_done = false;
  std::thread input([&] {
    v1::ConsoleInput in = first;
    do {
      if (!in.data().empty() && in.data().size() <= 65536) (void)h->Call(Type::kConsoleInput, in.data());
    } while (stream->Read(&in));
    input_done = true;
  });
  while (ok && !ctx->IsCancelled()) {
    std::string data;
    bool closed;
    {
      absl::MutexLock l(&sink->mu);
      sink->mu.AwaitWithTimeout(absl::Condition(
                                    +[](ConsoleSink* s) { return !s->data.empty() || s->closed; },
                                    sink.get()),
                                kPoll);
      data.swap(sink->data);
      closed = sink->closed;
    }
    if (!data.empty()) {
      v1::ConsoleOutput o;
      o.set_data(std::move(data));
      ok = stream->Write(o);
    } else if (closed) {
      break;  // the VM is done and everything it printed has been sent
    }
  }
  h->DetachConsole(sink);
  // The sync API cannot end the stream while the input thread is in Read:
  // a client that has closed its side (or does within a second) gets OK,
  // one that keeps it open is cancelled.
  for (int i = 0; i < 50 && !input_done; ++i) absl::SleepFor(absl::Milliseconds(20));
  if (!input_done) ctx->TryCancel();
  input.join();
  return grpc::Status::OK;
}

grpc::Status VmServiceImpl::GetMetrics(grpc::ServerContext*, const v1::VmRef* ref,
                                       v1::GetMetricsResponse* out) {
  absl::StatusOr<std::shared_ptr<VmHandle>> h = Find(ref->vm_id());
  if (!h.ok()) return ToGrpc(h.status());
  absl::StatusOr<Reply> r = (*h)->Call(Type::kGetStats);
  if (!r.ok()) return ToGrpc(r.status());
  if (!r->status.ok()) return ToGrpc(r->status);
  absl::StatusOr<Counters> c = DecodeCounters(r->body);
  if (!c.ok()) return ToGrpc(absl::InternalError(absl::StrCat("VM process: ", c.status().message())));
  for (const auto& [k, v] : *c) (*out->mutable_counters())[k] = v;
  int pid = (*h)->Snapshot().pid();
  if (pid > 0) (*out->mutable_counters())["vmm_rss_kib"] = ProcStatusKib(pid, "VmRSS");
  return grpc::Status::OK;
}

namespace {

uint64_t ScreenshotNonce() {
  static std::atomic<uint64_t> next{std::random_device()()};
  return next++;
}

}  // namespace

// The VM process writes the PNG into its directory and says how large it
// is; it is untrusted, so the size and the picture's are bounded here.
grpc::Status VmServiceImpl::GetScreenshot(grpc::ServerContext*, const v1::VmRef* ref,
                                          v1::GetScreenshotResponse* out) {
  constexpr uint64_t kMaxPng = 256 << 20;
  absl::StatusOr<std::shared_ptr<VmHandle>> h = Find(ref->vm_id());
  if (!h.ok()) return ToGrpc(h.status());
  const std::string name = absl::StrFormat("screenshot-%016x.png", ScreenshotNonce());
  const std::string path = (*h)->dir() + "/" + name;
  absl::StatusOr<Reply> r = (*h)->Call(Type::kScreenshot, name);
  // Gone when this returns, whatever happened.
  absl::Cleanup remove = [&path] { std::remove(path.c_str()); };
  if (!r.ok()) return ToGrpc(r.status());
  if (!r->status.ok()) return ToGrpc(r->status);
  absl::StatusOr<Counters> c = DecodeCounters(r->body);
  std::map<std::string, uint64_t> m;
  if (c.ok()) m.insert(c->begin(), c->end());
  if (!c.ok() || m["width"] == 0 || m["width"] > 16384 || m["height"] == 0 ||
      m["height"] > 16384 || m["bytes"] == 0 || m["bytes"] > kMaxPng) {
    return ToGrpc(absl::InternalError("VM process: a malformed screenshot reply"));
  }
  std::ifstream f(path, std::ios::binary);
  std::string png(m["bytes"], '\0');
  if (!f.read(png.data(), static_cast<std::streamsize>(png.size())) || f.peek() != EOF) {
    return ToGrpc(absl::InternalError(
        absl::StrCat("VM process: ", path, " is not the ", png.size(), " bytes it said")));
  }
  out->set_png(std::move(png));
  out->set_width(static_cast<uint32_t>(m["width"]));
  out->set_height(static_cast<uint32_t>(m["height"]));
  return grpc::Status::OK;
}

}  // namespace kindling::control
