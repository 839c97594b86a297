// The kindling.v1 service implementations behind `kindling serve`.
//
//   VmServiceImpl vms(options, &host);
//   HostServiceImpl host(options.kvm_device);
//   builder.RegisterService(&vms);
#ifndef KINDLING_LAUNCHER_CONTROL_SERVICES_H_
#define KINDLING_LAUNCHER_CONTROL_SERVICES_H_

#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "kindling/v1/host.grpc.pb.h"
#include "kindling/v1/vm.grpc.pb.h"
#include "launcher/control/etcd_pool.h"
#include "launcher/control/metrics.h"
#include "launcher/control/vm_handle.h"

namespace kindling::control {

struct ServiceOptions {
  std::string state_dir = "/run/kindling";
  std::string vm_binary;  // the `kindling` program that runs VM processes
  std::string kvm_device = "/dev/kvm";
};

class HostServiceImpl final : public v1::HostService::Service {
 public:
  explicit HostServiceImpl(std::string kvm_device);
  grpc::Status GetHostInfo(grpc::ServerContext*, const v1::GetHostInfoRequest*,
                           v1::HostInfo* out) override;
  // What CreateVm checks against: read once at start.
  const v1::HostInfo& info() const { return info_; }

 private:
  v1::HostInfo info_;
};

class VmServiceImpl final : public v1::VmService::Service {
 public:
  VmServiceImpl(ServiceOptions options, const HostServiceImpl* host);
  // kindling serve --pool: CreateVm refuses VMs that could not migrate to
  // every host of `pool` (unless outside_pool). Not owned; may be null.
  void SetPool(const EtcdPool* pool) { pool_ = pool; }
  // Finds the VM processes a previous daemon left running.
  void Recover();
  // Ends every VM process (--stop-vms-on-exit).
  void StopAll();
  // For --metrics-listen: every VM's state, KVM statistics, CPU and memory.
  std::vector<VmMetrics> CollectMetrics();

  grpc::Status CreateVm(grpc::ServerContext*, const v1::CreateVmRequest*, v1::Vm*) override;
  grpc::Status StartVm(grpc::ServerContext*, const v1::VmRef*, v1::Vm*) override;
  grpc::Status PauseVm(grpc::ServerContext*, const v1::VmRef*, v1::Vm*) override;
  grpc::Status ResumeVm(grpc::ServerContext*, const v1::VmRef*, v1::Vm*) override;
  grpc::Status ShutdownVm(grpc::ServerContext*, const v1::VmRef*, v1::Vm*) override;
  grpc::Status KillVm(grpc::ServerContext*, const v1::VmRef*, v1::Vm*) override;
  grpc::Status DeleteVm(grpc::ServerContext*, const v1::VmRef*, v1::Vm*) override;
  grpc::Status SnapshotVm(grpc::ServerContext*, const v1::SnapshotVmRequest*,
                          v1::Vm*) override;
  grpc::Status MigrateVm(grpc::ServerContext*, const v1::MigrateVmRequest*,
                         v1::Vm*) override;
  grpc::Status UpdateMigration(grpc::ServerContext*, const v1::UpdateMigrationRequest*,
                               v1::Vm*) override;
  grpc::Status RestoreVm(grpc::ServerContext*, const v1::RestoreVmRequest*,
                         v1::Vm*) override;
  grpc::Status ReceiveMigration(grpc::ServerContext*, const v1::ReceiveMigrationRequest*,
                                v1::Vm*) override;
  grpc::Status GetVm(grpc::ServerContext*, const v1::VmRef*, v1::Vm*) override;
  grpc::Status ListVms(grpc::ServerContext*, const v1::ListVmsRequest*,
                       v1::ListVmsResponse*) override;
  grpc::Status WatchEvents(grpc::ServerContext*, const v1::WatchEventsRequest*,
                           grpc::ServerWriter<v1::Event>*) override;
  grpc::Status AttachConsole(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::ConsoleOutput, v1::ConsoleInput>*) override;
  grpc::Status GetMetrics(grpc::ServerContext*, const v1::VmRef*,
                          v1::GetMetricsResponse*) override;
  grpc::Status GetScreenshot(grpc::ServerContext*, const v1::VmRef*,
                             v1::GetScreenshotResponse*) override;

 private:
  absl::StatusOr<std::shared_ptr<VmHandle>> Find(const std::string& vm_id);
  absl::StatusOr<v1::Vm> Create(const v1::CreateVmRequest& req);
  absl::StatusOr<v1::Vm> Restore(const v1::RestoreVmRequest& req);
  // Reserves the id, writes the VM's directory and spawns its process.
  absl::StatusOr<v1::Vm> Launch(const std::string& id, const v1::VmConfig& config,
                                const std::vector<std::string>& flags,
                                v1::VmState initial_state = v1::VM_STATE_CREATED);
  absl::StatusOr<v1::Vm> Receive(const v1::ReceiveMigrationRequest& req);
  absl::StatusOr<v1::Vm> Lifecycle(const std::string& vm_id, Type command,
                                   std::string payload = {},
                                   absl::Duration timeout = absl::Seconds(10));
  absl::StatusOr<v1::Vm> Snapshot(const v1::SnapshotVmRequest& req);
  absl::StatusOr<v1::Vm> Migrate(const v1::MigrateVmRequest& req);
  absl::StatusOr<v1::Vm> UpdateMigration(const v1::UpdateMigrationRequest& req);

  const ServiceOptions options_;
  const HostServiceImpl* const host_;
  const EtcdPool* pool_ = nullptr;
  EventHub hub_;
  absl::Mutex mu_;
  // A null entry is an id being created.
  std::map<std::string, std::shared_ptr<VmHandle>> vms_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kindling::control

#endif  // KINDLING_LAUNCHER_CONTROL_SERVICES_H_
