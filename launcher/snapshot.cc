// MicroVm's snapshot halves: which of the VM's objects hold state, in what
// order they are saved and loaded. The format, its validation and the
// memory file are libs/migration's.
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "launcher/microvm.h"
#include "migration/snapshot.h"
#include "migration/state_codec.h"
#include "vcpu/cpu_compat.h"
#include "vm-memory/layout.h"

namespace kindling {
namespace {

namespace v1 = ::kindling::migration::v1;
constexpr char kSerialName[] = "serial ttyS0";
constexpr uint32_t kSerialVersion = 1;
// How long in-flight disk I/O may take to complete before a snapshot.
constexpr absl::Duration kQuiesceTimeout = absl::Seconds(30);

uint64_t RamBytes(const v1::Machine& m) {
  uint64_t total = 0;
  for (const v1::MemoryRegion& r : m.regions()) total += r.size();
  return total;
}

}  // namespace

// The RAM must sit where this launcher puts it: anything else could cover
// the IOAPIC, the TSS or the MMIO devices with guest RAM.
absl::Status MicroVm::CheckRamLayout(const v1::Machine& m) {
  uint64_t total = RamBytes(m);
  std::vector<vm_memory::RegionSpec> want = vm_memory::X86RamLayout(total);
  std::vector<vm_memory::RegionSpec> have = ::migration::RegionLayout(m);
  bool same = want.size() == have.size() && total % (1 << 20) == 0;
  for (size_t i = 0; same && i < want.size(); ++i) {
    same = want[i].start == have[i].start && want[i].size == have[i].size;
  }
  if (!same) {
    return absl::InvalidArgumentError(
        "restore: the saved RAM layout is not kindling's x86 layout for its size");
  }
  return absl::OkStatus();
}

namespace {

// The host-side checks Create's ValidateConfig makes, for a restored shape.
absl::Status CheckRestorable(const VmConfig& config, const v1::Snapshot& s) {
  if (config.virtio.disks.size() + config.virtio.nets.size() > 0 || config.virtio.rng ||
      config.virtio.console || config.virtio.vsock || config.virtio.balloon || config.virtio.gpu) {
    return absl::InvalidArgumentError(
        "restore: the virtio devices come from the snapshot (give none)");
  }
  uint64_t mib = RamBytes(s.machine()) >> 20;
  uint64_t host = HostMemoryMib();
  if (host != 0 && mib > host) {
    return absl::InvalidArgumentError(absl::StrCat(
        "restore: the snapshot's ", mib, " MiB is more than this host's ", host,
        " MiB of RAM"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<VmConfig> MicroVm::ShapeFromState(const VmConfig& config,
                                                 const v1::Snapshot& s,
                                                 const std::string& where) {
  RETURN_IF_ERROR(CheckRamLayout(s.machine()));
  RETURN_IF_ERROR(CheckRestorable(config, s));
  VmConfig shaped = config;
  shaped.cpus = s.machine().vcpus();
  shaped.memory_mib = RamBytes(s.machine()) >> 20;
  shaped.irqchip = s.machine().irqchip() == v1::IRQCHIP_MODE_FULL
                       ? vcpu::IrqchipMode::kFull
                       : vcpu::IrqchipMode::kSplit;
  absl::StatusOr<VirtioConfig> virtio = VirtioConfigFromSnapshot(s);
  if (!virtio.ok()) {
    return absl::Status(virtio.status().code(),
                        absl::StrCat(where, ": ", virtio.status().message()));
  }
  shaped.virtio = *std::move(virtio);
  return shaped;
}

absl::StatusOr<std::unique_ptr<MicroVm>> MicroVm::Restore(const VmConfig& config,
                                                          const std::string& dir,
                                                          ::migration::RestoreMode mode) {
  ASSIGN_OR_RETURN(v1::Snapshot s, ::migration::ReadSnapshot(dir));
  ASSIGN_OR_RETURN(VmConfig shaped, ShapeFromState(config, s, dir));
  std::unique_ptr<MicroVm> vm(new MicroVm());
  vm_memory::MemoryOptions options;
  options.hugepages = shaped.hugepages;
  ASSIGN_OR_RETURN(::migration::RestoredMemory ram,
                   ::migration::RestoreMemory(dir, s, mode, options));
  if (!ram.working_set.ok()) {
    std::fprintf(stderr, "kindling: restoring without a working set: %s\n",
                 std::string(ram.working_set.message()).c_str());
  }
  vm->memory_ = std::move(ram.memory);
  vm->pager_ = std::move(ram.pager);
  RETURN_IF_ERROR(vm->BuildFromState(shaped, s, dir));
  return vm;
}

absl::Status MicroVm::BuildFromState(const VmConfig& config, const v1::Snapshot& s,
                                     const std::string& where) {
  RETURN_IF_ERROR(PrepareFromState(config, s));
  return LoadFromState(s, where);
}

absl::Status MicroVm::CheckGuestCpus(const VmConfig& config, const v1::Snapshot& s) const {
  ASSIGN_OR_RETURN(vcpu::CpuidTable host, HostCpuid(config, /*guest_visible=*/true));
  ASSIGN_OR_RETURN(std::vector<kvm_msr_entry> host_msrs, kvm_->GetFeatureMsrs());
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) std::snprintf(name, sizeof(name), "(this host)");
  for (const v1::Vcpu& v : s.vcpus()) {
    ASSIGN_OR_RETURN(vcpu::CpuidTable guest, ::migration::DecodeCpuid(v));
    std::vector<kvm_msr_entry> msrs;
    for (const v1::Msr& m : v.msrs()) {  // bounded by ValidateState
      kvm_msr_entry e = {};
      e.index = m.index();
      e.data = m.value();
      msrs.push_back(e);
    }
    RETURN_IF_ERROR(vcpu::CheckGuestCpu(guest, msrs, host, host_msrs, name));
  }
  return absl::OkStatus();
}

absl::Status MicroVm::PrepareFromState(const VmConfig& config, const v1::Snapshot& s) {
  RETURN_IF_ERROR(CreateKvmVm(config));
  RETURN_IF_ERROR(CheckGuestCpus(config, s));
  virtio_plan_ = PlanVirtio(config.virtio);
  RETURN_IF_ERROR(SetUpDevices(config));
  for (uint32_t i = 0; i < config.cpus; ++i) {
    ASSIGN_OR_RETURN(auto cpuid, ::migration::DecodeCpuid(s.vcpus(i)));
    RETURN_IF_ERROR(AddVcpu(config, i, cpuid).status());
  }
  CreateRunner();
  return absl::OkStatus();
}

absl::Status MicroVm::LoadFromState(const v1::Snapshot& s, const std::string& where) {
  absl::Status st = LoadState(s);
  if (!st.ok()) return absl::Status(st.code(), absl::StrCat(where, ": ", st.message()));
  if (virtio_) virtio_->KickAfterRestore();
  return absl::OkStatus();
}

absl::Status MicroVm::LoadState(const v1::Snapshot& s) {
  MachineState machine;
  for (const v1::Vcpu& v : s.vcpus()) {
    ASSIGN_OR_RETURN(vcpu::VcpuState st, ::migration::DecodeVcpu(v));
    machine.vcpus.push_back(std::move(st));
  }
  ASSIGN_OR_RETURN(machine.clock, ::migration::DecodeClock(s.kvm_clock()));
  RETURN_IF_ERROR(RestoreMachineState(machine));
  if (ioapic_) {
    ASSIGN_OR_RETURN(auto io, ::migration::DecodeIoapic(s.irqchip().ioapic()));
    ioapic_->RestoreState(io);
  } else {
    ASSIGN_OR_RETURN(auto chip, ::migration::DecodeKernelIrqchip(s.irqchip().kernel()));
    RETURN_IF_ERROR(vm_->SetIrqchip(chip.pic_master));
    RETURN_IF_ERROR(vm_->SetIrqchip(chip.pic_slave));
    RETURN_IF_ERROR(vm_->SetIrqchip(chip.ioapic));
    RETURN_IF_ERROR(vm_->SetPit(chip.pit));
  }
  std::vector<const v1::Device*> virtio;
  for (const v1::Device& d : s.devices()) {
    if (d.has_virtio()) {
      virtio.push_back(&d);
      continue;
    }
    if (d.name() != kSerialName || !d.has_serial()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot holds a device '", d.name(), "' this VM does not have"));
    }
    if (d.version() != kSerialVersion) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device '", d.name(), "' state version ", d.version(),
          " is not supported (this build reads ", kSerialVersion, ")"));
    }
    ASSIGN_OR_RETURN(auto serial, ::migration::DecodeSerial(d.serial()));
    serial_->RestoreState(serial);
  }
  if (virtio_) RETURN_IF_ERROR(virtio_->RestoreState(virtio_plan_, virtio));
  return absl::OkStatus();
}

absl::StatusOr<v1::Snapshot> MicroVm::CaptureState() {
  ASSIGN_OR_RETURN(MachineState machine, SaveMachineState());
  v1::Snapshot s;
  s.set_producer("kindling");
  s.mutable_machine()->set_vcpus(vcpus_.size());
  s.mutable_machine()->set_irqchip(ioapic_ ? v1::IRQCHIP_MODE_SPLIT : v1::IRQCHIP_MODE_FULL);
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    ASSIGN_OR_RETURN(auto cpuid, vcpus_[i]->GetCpuid());
    *s.add_vcpus() = ::migration::EncodeVcpu(machine.vcpus[i], cpuid);
  }
  s.set_kvm_clock(::migration::EncodeClock(machine.clock));
  if (ioapic_) {
    *s.mutable_irqchip()->mutable_ioapic() = ::migration::EncodeIoapic(ioapic_->SaveState());
  } else {
    ::migration::KernelIrqchipState chip;
    ASSIGN_OR_RETURN(chip.pic_master, vm_->GetIrqchip(KVM_IRQCHIP_PIC_MASTER));
    ASSIGN_OR_RETURN(chip.pic_slave, vm_->GetIrqchip(KVM_IRQCHIP_PIC_SLAVE));
    ASSIGN_OR_RETURN(chip.ioapic, vm_->GetIrqchip(KVM_IRQCHIP_IOAPIC));
    ASSIGN_OR_RETURN(chip.pit, vm_->GetPit());
    *s.mutable_irqchip()->mutable_kernel() = ::migration::EncodeKernelIrqchip(chip);
  }
  v1::Device* serial = s.add_devices();
  serial->set_name(kSerialName);
  serial->set_version(kSerialVersion);
  *serial->mutable_serial() = ::migration::EncodeSerial(serial_->SaveState());
  s.mutable_virtio()->set_pci(virtio_plan_.has_pci());
  s.mutable_virtio()->set_packed(virtio_config_.packed);
  if (virtio_) {
    ASSIGN_OR_RETURN(std::vector<v1::Device> records,
                     virtio_->SaveState(virtio_plan_, virtio_config_));
    for (v1::Device& d : records) *s.add_devices() = std::move(d);
  }
  return s;
}

absl::Status MicroVm::SaveSnapshot(const std::string& dir, bool diff) {
  if (diff && !diff_base_) {
    return absl::FailedPreconditionError(
        "diff snapshot: this VM has no earlier snapshot to diff against (none taken by "
        "this VM process yet, the last one failed, or a migration ran since): take a full "
        "snapshot first");
  }
  // Devices first: at rest, and held until RAM is written, so none writes
  // guest memory or moves a ring behind the saved state.
  std::vector<std::unique_ptr<virtio::LoopHold>> holds;
  if (virtio_) {
    RETURN_IF_ERROR(virtio_->CheckSnapshot());
    ASSIGN_OR_RETURN(holds, virtio_->Quiesce(kQuiesceTimeout));
  }
  ASSIGN_OR_RETURN(v1::Snapshot s, CaptureState());
  const std::string id = ::migration::NewSnapshotId();
  s.set_snapshot_id(id);
  absl::Status written;
  if (diff) {
    // Taking the dirty pages clears them: whatever happens next, this
    // base no longer describes what changed since it.
    absl::StatusOr<::migration::PageBitmaps> dirty = TakeDirtyPages();
    v1::DiffBase base = *diff_base_;
    diff_base_.reset();
    written = dirty.ok() ? ::migration::WriteDiffSnapshot(dir, std::move(s), *memory_, *dirty, base)
                         : dirty.status();
  } else {
    diff_base_.reset();
    written = ::migration::WriteSnapshot(dir, std::move(s), *memory_);
  }
  RETURN_IF_ERROR(written);
  // Still paused and held: the next diff counts from exactly here.
  if (absl::Status st = StartDiffBase(dir, id); !st.ok()) {
    std::fprintf(stderr, "kindling: snapshot %s written, but diffs against it are off: %s\n",
                 dir.c_str(), std::string(st.message()).c_str());
  }
  return absl::OkStatus();
}

absl::Status MicroVm::StartDiffBase(const std::string& dir, const std::string& snapshot_id) {
  char real[PATH_MAX];
  if (::realpath(dir.c_str(), real) == nullptr) return absl::ErrnoToStatus(errno, dir);
  if (dirty_logging_) {
    RETURN_IF_ERROR(TakeDirtyPages().status());
  } else {
    RETURN_IF_ERROR(SetDirtyLogging(true));
  }
  v1::DiffBase base;
  base.set_directory(real);
  base.set_snapshot_id(snapshot_id);
  diff_base_ = std::move(base);
  return absl::OkStatus();
}

absl::Status MicroVm::SetDirtyLogging(bool on) {
  uint32_t slot = 0;
  for (const vm_memory::GuestRegion* r : memory_->regions()) {
    RETURN_IF_ERROR(vm_->SetUserMemoryRegion(slot++, *r, on ? KVM_MEM_LOG_DIRTY_PAGES : 0));
    if (on) r->dirty_bitmap().TakeAndClear();
  }
  dirty_logging_ = on;
  return absl::OkStatus();
}

absl::StatusOr<::migration::PageBitmaps> MicroVm::TakeDirtyPages() {
  ::migration::PageBitmaps out;
  uint32_t slot = 0;
  for (const vm_memory::GuestRegion* r : memory_->regions()) {
    ASSIGN_OR_RETURN(std::vector<uint64_t> bits, vm_->GetDirtyLog(slot++, r->size()));
    std::vector<uint64_t> vmm = r->dirty_bitmap().TakeAndClear();
    for (size_t i = 0; i < bits.size() && i < vmm.size(); ++i) bits[i] |= vmm[i];
    out.push_back(std::move(bits));
  }
  return out;
}

}  // namespace kindling
