// MicroVm's live-migration halves: the VM as a migration::MigrationSource
// (dirty log on its memslots, vCPU throttling, the switch-over) and a VM
// built from an incoming stream. The protocol is libs/migration's.
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "launcher/microvm.h"
#include "migration/postcopy.h"
#include "migration/precopy.h"
#include "migration/snapshot.h"
#include "migration/state_codec.h"
#include "vcpu/cpu_compat.h"

namespace kindling {

namespace v1 = ::kindling::migration::v1;

class VmMigrationSource : public ::migration::MigrationSource {
 public:
  explicit VmMigrationSource(MicroVm& vm) : vm_(vm) {
    machine_.set_vcpus(static_cast<uint32_t>(vm.vcpus_.size()));
    machine_.set_irqchip(vm.ioapic_ ? v1::IRQCHIP_MODE_SPLIT : v1::IRQCHIP_MODE_FULL);
    for (const vm_memory::GuestRegion* r : vm.memory_->regions()) {
      v1::MemoryRegion* out = machine_.add_regions();
      out->set_guest_address(r->start().value);
      out->set_size(r->size());
    }
  }
  ~VmMigrationSource() override { SetThrottle(0); }

  vm_memory::GuestMemory& memory() override { return *vm_.memory_; }
  const v1::Machine& machine() const override { return machine_; }

  // What the destination needs to build the VM before the state comes.
  absl::StatusOr<v1::Snapshot> DescribeMachine() override {
    v1::Snapshot s;
    *s.mutable_machine() = machine_;
    for (auto& cpu : vm_.vcpus_) {
      ASSIGN_OR_RETURN(auto cpuid, cpu->GetCpuid());
      // The feature MSR the destination's pre-migration check compares.
      vcpu::VcpuState features{};
      const uint32_t index = vcpu::kArchCapabilitiesMsr;
      ASSIGN_OR_RETURN(features.msrs, cpu->GetMsrs(std::span<const uint32_t>(&index, 1)));
      *s.add_vcpus() = ::migration::EncodeVcpu(features, cpuid);
    }
    if (vm_.ioapic_) s.mutable_irqchip()->mutable_ioapic();
    else s.mutable_irqchip()->mutable_kernel();
    s.mutable_virtio()->set_pci(vm_.virtio_plan_.has_pci());
    s.mutable_virtio()->set_packed(vm_.virtio_config_.packed);
    if (vm_.virtio_) {
      ASSIGN_OR_RETURN(std::vector<v1::Device> records,
                       vm_.virtio_->SaveState(vm_.virtio_plan_, vm_.virtio_config_, false));
      for (v1::Device& d : records) *s.add_devices() = std::move(d);
    }
    return s;
  }

  // A migration attempt drops the VM's diff base: the dirty log it reads
  // and clears is the one a diff snapshot would need.
  absl::Status StartDirtyLog() override {
    vm_.diff_base_.reset();
    return vm_.SetDirtyLogging(true);
  }
  void StopDirtyLog() override { (void)vm_.SetDirtyLogging(false); }

  absl::StatusOr<std::vector<std::vector<uint64_t>>> TakeDirty() override {
    return vm_.TakeDirtyPages();
  }

  // Keeps the vCPUs out for `percent` of every 10 ms.
  void SetThrottle(int percent) override {
    throttle_.store(percent);
    if (percent > 0 && !throttler_.joinable()) {
      throttler_ = std::thread([this] { Throttle(); });
    } else if (percent == 0 && throttler_.joinable()) {
      throttler_.join();
    }
  }

  absl::Status Stop() override {
    SetThrottle(0);
    vm_.Pause();
    if (vm_.virtio_) {
      ASSIGN_OR_RETURN(holds_, vm_.virtio_->Quiesce(absl::Seconds(30)));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<v1::Snapshot> CaptureState() override { return vm_.CaptureState(); }
  void Resume() override {
    holds_.clear();
    vm_.Resume();
  }
  void Migrated() override {
    holds_.clear();
    vm_.Stop({vcpu::VcpuRunner::StopReason::kRequested, 0, "migrated"});
  }

 private:
  void Throttle() {
    for (int pct; (pct = throttle_.load()) > 0;) {
      vm_.Pause();
      absl::SleepFor(absl::Microseconds(100 * pct));
      vm_.Resume();
      absl::SleepFor(absl::Microseconds(100 * (100 - pct)));
    }
  }

  MicroVm& vm_;
  v1::Machine machine_;
  std::atomic<int> throttle_{0};
  std::thread throttler_;
  std::vector<std::unique_ptr<virtio::LoopHold>> holds_;
};

absl::Status MicroVm::MigrateTo(
    int fd, const ::migration::MigrationOptions& options,
    const std::function<void(const ::migration::MigrationProgress&)>& progress) {
  if (virtio_) RETURN_IF_ERROR(virtio_->CheckSnapshot());
  VmMigrationSource source(*this);
  return ::migration::Migrate(fd, source, options, progress);
}

namespace {

// A post-copy destination whose source is gone cannot run its guest on.
void EndForLostPages(const absl::Status& why) {
  std::fprintf(stderr,
               "kindling: error: post-copy migration failed after the switch-over: %s; the "
               "guest cannot run on without its missing pages (the source keeps its paused "
               "copy)\n",
               std::string(why.message()).c_str());
  std::_Exit(125);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MicroVm>> MicroVm::Incoming(
    const VmConfig& config, vm_memory::UniqueFd conn, absl::Duration peer_timeout,
    std::function<void(const absl::Status&)> on_postcopy_failure) {
  ::migration::FrameStream s(conn.get());
  absl::StatusOr<v1::MigrationHello> hello =
      ::migration::ReceiveHello(s, absl::Now() + peer_timeout);
  if (!hello.ok()) {
    (void)s.SendText(::migration::FrameType::kError, std::string(hello.status().message()));
    return hello.status();
  }
  return Incoming(config, {std::move(conn), *std::move(hello)}, peer_timeout,
                  std::move(on_postcopy_failure));
}

absl::StatusOr<std::unique_ptr<MicroVm>> MicroVm::Incoming(
    const VmConfig& config, ::migration::IncomingSource source, absl::Duration peer_timeout,
    std::function<void(const absl::Status&)> on_postcopy_failure) {
  vm_memory::UniqueFd conn = std::move(source.conn);
  const v1::MigrationHello* hello = &source.hello;
  ::migration::FrameStream s(conn.get());
  auto fail = [&](absl::Status why) {
    (void)s.SendText(::migration::FrameType::kError, std::string(why.message()));
    return why;
  };
  // The VM is built now, while RAM comes; the switch-over only loads state.
  absl::StatusOr<std::unique_ptr<MicroVm>> vm = PrepareIncoming(config, hello->skeleton());
  if (!vm.ok()) return fail(vm.status());
  absl::StatusOr<::migration::IncomingState> in =
      ::migration::ReceiveMemoryAndState(s, *(*vm)->memory_, peer_timeout);
  if (!in.ok()) return fail(in.status());
  if (in->state.machine().vcpus() != hello->machine().vcpus() ||
      in->state.machine().irqchip() != hello->machine().irqchip()) {
    return fail(absl::InvalidArgumentError(
        "incoming migration: the state's vCPUs or irqchip differ from the HELLO's"));
  }
  if (in->postcopy) {  // pages may be needed from here on: serve them first
    absl::StatusOr<std::unique_ptr<::migration::PostcopyPager>> pager =
        ::migration::PostcopyPager::Start(
            *(*vm)->memory_, conn.get(), *std::move(in->postcopy), peer_timeout,
            on_postcopy_failure ? std::move(on_postcopy_failure) : EndForLostPages);
    if (!pager.ok()) return fail(pager.status());
    (*vm)->postcopy_ = *std::move(pager);
  }
  if (absl::Status st = (*vm)->LoadFromState(in->state, "incoming migration"); !st.ok()) {
    return fail(st);
  }
  if ((*vm)->postcopy_) {
    RETURN_IF_ERROR((*vm)->postcopy_->Finish(peer_timeout));
    (*vm)->incoming_ = std::move(conn);
  } else {
    RETURN_IF_ERROR(::migration::FinishIncoming(s, peer_timeout));
  }
  return vm;
}

absl::Status MicroVm::WaitPostcopy(absl::Duration timeout) {
  if (!postcopy_) return absl::OkStatus();
  return postcopy_->WaitComplete(timeout);
}

absl::StatusOr<std::unique_ptr<MicroVm>> MicroVm::PrepareIncoming(
    const VmConfig& config, const v1::Snapshot& skeleton) {
  ASSIGN_OR_RETURN(VmConfig shaped, ShapeFromState(config, skeleton, "incoming migration"));
  std::unique_ptr<MicroVm> vm(new MicroVm());
  vm_memory::MemoryOptions options;
  options.hugepages = shaped.hugepages;
  ASSIGN_OR_RETURN(vm->memory_, vm_memory::GuestMemory::Create(
                                    ::migration::RegionLayout(skeleton.machine()), options));
  RETURN_IF_ERROR(vm->PrepareFromState(shaped, skeleton));
  return vm;
}

}  // namespace kindling
