#include "launcher/microvm.h"

#include <unistd.h>

#include <cerrno>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kindling/status_macros.h"
#include "vcpu/boot/boot_setup.h"
#include "vcpu/boot/layout.h"
#include "vcpu/boot/platform_tables.h"
#include "vcpu/cpu_template.h"
#include "vcpu/devices/legacy.h"
#include "vcpu/x86_defaults.h"
#include "vm-memory/layout.h"

namespace kindling {
namespace {

using vcpu::VcpuRunner;

constexpr uint64_t kMinMemoryMib = 8;
constexpr uint64_t kMaxKernelBytes = 512ULL << 20;
constexpr uint64_t kMaxInitrdBytes = 2ULL << 30;
// KVM needs three pages for the real-mode TSS and one for the identity
// map, in guest-physical space nothing else uses.
constexpr uint64_t kTssAddress = 0xfffbd000;
constexpr uint64_t kIdentityMapAddress = 0xfffbc000;
constexpr uint32_t kSerialIrq = 4;
// ACPI power management (hardware-reduced): the GED's GSI (ISA IRQ 3, the
// unused COM2 line) and the sleep control/status ports.
constexpr uint8_t kGedIrq = 3;
constexpr uint16_t kAcpiSleepPort = 0x3c0;

void WriteStdout(uint8_t b) {
  while (::write(STDOUT_FILENO, &b, 1) < 0 && errno == EINTR) {
  }
}

}  // namespace

uint64_t HostMemoryMib() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  while (in >> key >> kib) {
    if (key == "MemTotal:") return kib / 1024;
    in.ignore(1 << 10, '\n');
  }
  return 0;
}

absl::Status ValidateConfig(const VmConfig& config) {
  if (config.kernel.empty()) return absl::InvalidArgumentError("--kernel is required");
  if (::access(config.kernel.c_str(), R_OK) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("kernel ", config.kernel));
  }
  if (!config.initrd.empty() && ::access(config.initrd.c_str(), R_OK) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("initrd ", config.initrd));
  }
  if (config.cpus == 0 || config.cpus > vcpu::boot::kMaxCpus) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cpus ", config.cpus, ": must be 1 to ", vcpu::boot::kMaxCpus));
  }
  if (config.memory_mib < kMinMemoryMib) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--memory ", config.memory_mib, " MiB: at least ", kMinMemoryMib,
        " MiB needed"));
  }
  uint64_t host = HostMemoryMib();
  if (host != 0 && config.memory_mib > host) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--memory ", config.memory_mib, " MiB is more than this host's ", host,
        " MiB of RAM"));
  }
  if (config.hugepages && config.memory_mib % 2 != 0) {
    return absl::InvalidArgumentError("--hugepages needs a memory size in 2 MiB steps");
  }
  if (!config.cpu_template.empty()) {
    RETURN_IF_ERROR(vcpu::LoadCpuTemplateFile(config.cpu_template).status());
  }
  if (!config.host_cpu_template.empty()) {
    RETURN_IF_ERROR(vcpu::LoadCpuTemplateFile(config.host_cpu_template).status());
  }
  return ValidateVirtio(config.virtio);
}

absl::StatusOr<std::unique_ptr<MicroVm>> MicroVm::Create(const VmConfig& config) {
  RETURN_IF_ERROR(ValidateConfig(config));
  std::unique_ptr<MicroVm> vm(new MicroVm());
  RETURN_IF_ERROR(vm->Build(config));
  return vm;
}

MicroVm::~MicroVm() {
  if (runner_) {
    runner_->Stop({VcpuRunner::StopReason::kRequested, 0, "VM destroyed"});
    runner_->Wait();
  }
  // The buses hold the virtio transports too; without this they would
  // outlive virtio_ and its event loops, and a device's destructor would
  // reach a loop already freed (seen: Balloon after a guest reboot).
  pio_.Clear();
  mmio_.Clear();
}

absl::Status MicroVm::Build(const VmConfig& config) {
  // Memory and the guest image first: a bad kernel or initrd is reported
  // the same way on hosts with and without KVM.
  RETURN_IF_ERROR(SetUpMemory(config));
  RETURN_IF_ERROR(LoadGuest(config));
  RETURN_IF_ERROR(CreateKvmVm(config));
  RETURN_IF_ERROR(SetUpDevices(config));
  return SetUpVcpus(config);
}

absl::Status MicroVm::CreateKvmVm(const VmConfig& config) {
  ASSIGN_OR_RETURN(kvm_, vcpu::Kvm::Open(config.kvm_device));
  std::vector<vcpu::NamedCapability> caps = vcpu::RequiredCapabilities();
  RETURN_IF_ERROR(kvm_->RequireCapabilities(caps));
  ASSIGN_OR_RETURN(vm_, kvm_->CreateVm());
  RETURN_IF_ERROR(vm_->SetTssAddress(kTssAddress));
  RETURN_IF_ERROR(vm_->SetIdentityMapAddress(kIdentityMapAddress));
  RETURN_IF_ERROR(vm_->CreateIrqchip(config.irqchip));
  if (config.irqchip == vcpu::IrqchipMode::kFull) RETURN_IF_ERROR(vm_->CreatePit());
  uint32_t slot = 0;
  for (const vm_memory::GuestRegion* r : memory_->regions()) {
    RETURN_IF_ERROR(vm_->SetUserMemoryRegion(slot++, *r));
  }
  return absl::OkStatus();
}

absl::Status MicroVm::SetUpMemory(const VmConfig& config) {
  vm_memory::MemoryOptions options;
  options.hugepages = config.hugepages;
  ASSIGN_OR_RETURN(memory_, vm_memory::GuestMemory::Create(
                                vm_memory::X86RamLayout(config.memory_mib << 20),
                                options));
  return absl::OkStatus();
}

absl::Status MicroVm::LoadGuest(const VmConfig& config) {
  using namespace vcpu::boot;
  ASSIGN_OR_RETURN(std::vector<uint8_t> image,
                   ReadFileCapped(config.kernel, kMaxKernelBytes));
  absl::StatusOr<LoadedKernel> kernel =
      LoadKernel(*memory_, image, config.elf_entry);
  if (!kernel.ok()) {
    return absl::Status(kernel.status().code(),
                        absl::StrCat(config.kernel, ": ", kernel.status().message()));
  }
  kernel_ = *kernel;
  virtio_plan_ = PlanVirtio(config.virtio);
  BootConfig boot;
  boot.cmdline = config.cmdline + virtio_plan_.CmdlineFragment();
  if (!config.initrd.empty()) {
    ASSIGN_OR_RETURN(std::vector<uint8_t> initrd,
                     ReadFileCapped(config.initrd, kMaxInitrdBytes));
    ASSIGN_OR_RETURN(boot.initrd, LoadInitrd(*memory_, initrd, kernel_));
  }
  PlatformConfig platform;
  platform.num_cpus = config.cpus;
  platform.has_pic = config.irqchip == vcpu::IrqchipMode::kFull;
  // The FADT is hardware-reduced, so Linux enumerates no legacy ISA IRQs:
  // COM1 must be in the DSDT for the 8250 driver to get IRQ 4.
  platform.io_devices.push_back({"COM1", "PNP0501", 0x3f8, 8, kSerialIrq});
  platform.dsdt_devices = virtio_plan_.DsdtDevices();
  platform.pci_ecam = virtio_plan_.Ecam();
  platform.power = AcpiPowerDescription{kGedIrq, kAcpiSleepPort};
  if (platform.pci_ecam) {
    boot.reserved.push_back({platform.pci_ecam->base, virtio::kPciEcamSizePerBus,
                             E820Type::kReserved});
  }
  RETURN_IF_ERROR(WriteMpTable(*memory_, platform));
  ASSIGN_OR_RETURN(boot.rsdp, WriteAcpiTables(*memory_, platform));
  return WriteBootInfo(*memory_, kernel_, boot);
}

absl::StatusOr<vcpu::CpuidTable> MicroVm::HostCpuid(const VmConfig& config,
                                                   bool guest_visible) const {
  ASSIGN_OR_RETURN(vcpu::CpuidTable cpuid, guest_visible ? vcpu::GuestVisibleCpuid(*kvm_)
                                                         : kvm_->GetSupportedCpuid());
  if (config.host_cpu_template.empty()) return cpuid;
  ASSIGN_OR_RETURN(vcpu::CpuTemplate narrow, vcpu::LoadCpuTemplateFile(config.host_cpu_template));
  absl::Status s = vcpu::ApplyCpuTemplate(cpuid, narrow);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("--host-cpu-template ", config.host_cpu_template,
                                               ": ", s.message()));
  }
  return cpuid;
}

absl::Status MicroVm::SetUpVcpus(const VmConfig& config) {
  ASSIGN_OR_RETURN(vcpu::CpuidTable cpuid, HostCpuid(config));
  vcpu::ApplyPvFeatures(cpuid, config.pv);
  vcpu::CpuTemplate tmpl;
  if (!config.cpu_template.empty()) {
    ASSIGN_OR_RETURN(tmpl, vcpu::LoadCpuTemplateFile(config.cpu_template));
    absl::Status s = vcpu::ApplyCpuTemplate(cpuid, tmpl);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat(config.cpu_template, ": ", s.message()));
    }
  }
  std::vector<uint32_t> kvm_msrs;
  if (!tmpl.msr_modifiers.empty()) {
    ASSIGN_OR_RETURN(kvm_msrs, kvm_->GetMsrIndexList());
  }
  for (uint32_t i = 0; i < config.cpus; ++i) {
    vcpu::CpuidTable table = cpuid;
    vcpu::SetTopology(table, i, config.cpus);
    ASSIGN_OR_RETURN(vcpu::Vcpu * v, AddVcpu(config, i, table));
    std::vector<kvm_msr_entry> msrs = vcpu::DefaultMsrs();
    RETURN_IF_ERROR(vcpu::ApplyMsrTemplate(msrs, tmpl, kvm_msrs));
    RETURN_IF_ERROR(v->SetMsrs(msrs));
    RETURN_IF_ERROR(vcpu::SetLocalInterrupts(*v));
    RETURN_IF_ERROR(vcpu::SetDefaultFpu(*v));
    if (i == 0) {
      ASSIGN_OR_RETURN(kvm_sregs sregs, v->GetSregs());
      ASSIGN_OR_RETURN(vcpu::boot::BootCpuState st,
                       vcpu::boot::SetupBootCpu(*memory_, kernel_, sregs));
      RETURN_IF_ERROR(v->SetSregs(st.sregs));
      RETURN_IF_ERROR(v->SetRegs(st.regs));
    }
  }
  CreateRunner();
  return absl::OkStatus();
}

absl::StatusOr<vcpu::Vcpu*> MicroVm::AddVcpu(const VmConfig& config, uint32_t id,
                                             std::span<const kvm_cpuid_entry2> cpuid) {
  ASSIGN_OR_RETURN(std::unique_ptr<vcpu::Vcpu> v, vm_->CreateVcpu(id));
  RETURN_IF_ERROR(v->SetCpuid(cpuid));
  if (config.collect_stats) {
    ASSIGN_OR_RETURN(vm_memory::UniqueFd fd, v->GetStatsFd());
    ASSIGN_OR_RETURN(auto stats, vcpu::KvmStats::Create(std::move(fd)));
    stats_.push_back(std::move(stats));
  }
  vcpus_.push_back(std::move(v));
  return vcpus_.back().get();
}

void MicroVm::CreateRunner() {
  std::function<void(uint8_t)> on_eoi;
  if (ioapic_) on_eoi = [ioapic = ioapic_](uint8_t v) { ioapic->EndOfInterrupt(v); };
  runner_ = std::make_unique<VcpuRunner>(vcpus_, pio_, mmio_, std::move(on_eoi));
}

absl::Status MicroVm::SetUpDevices(const VmConfig& config) {
  virtio_config_ = config.virtio;
  auto output = config.console_output ? config.console_output : WriteStdout;
  if (config.irqchip == vcpu::IrqchipMode::kSplit) {
    // The IOAPIC lives here; it delivers through KVM as MSIs.
    vcpu::Vm* vm = vm_.get();
    ioapic_ = std::make_shared<vcpu::Ioapic>(
        config.cpus, [vm](uint64_t address, uint32_t data) {
          (void)vm->SignalMsi(address, data);
        });
    RETURN_IF_ERROR(mmio_.Insert(ioapic_, vcpu::boot::kIoapicAddress, 0x20, "ioapic"));
  }
  std::function<void()> serial_irq = EdgeIrq(kSerialIrq);
  serial_ = std::make_shared<vcpu::Serial>(output, serial_irq);
  RETURN_IF_ERROR(pio_.Insert(serial_, 0x3f8, 8, "serial ttyS0"));
  RETURN_IF_ERROR(pio_.Insert(std::make_shared<vcpu::I8042>([this] {
                                Stop({VcpuRunner::StopReason::kShutdown, 0,
                                      "guest reset through the i8042"});
                              }),
                              0x60, 5, "i8042"));
  RETURN_IF_ERROR(pio_.Insert(
      std::make_shared<vcpu::CmosRtc>(config.memory_mib << 20,
                                      [] { return ::time(nullptr); }),
      0x70, 2, "cmos"));
  RETURN_IF_ERROR(pio_.Insert(std::make_shared<vcpu::DebugExit>([this](uint8_t v) {
                                Stop({VcpuRunner::StopReason::kGuestExit, v,
                                      absl::StrCat("guest wrote ", v,
                                                   " to the debug-exit port")});
                              }),
                              0xf4, 1, "debug-exit"));
  power_button_ = EdgeIrq(kGedIrq);
  RETURN_IF_ERROR(pio_.Insert(std::make_shared<vcpu::AcpiSleep>([this] {
                                Stop({VcpuRunner::StopReason::kShutdown, 0,
                                      "guest powered off (ACPI S5)"});
                              }),
                              kAcpiSleepPort, 2, "acpi-sleep"));
  VirtioEnv env{memory_.get(), vm_.get(), &mmio_, &pio_, ioapic_,
                [output](std::string_view bytes) {
                  for (char c : bytes) output(static_cast<uint8_t>(c));
                },
                config.on_device_failure, config.on_balloon_stats};
  ASSIGN_OR_RETURN(virtio_, VirtioDevices::Create(virtio_plan_, config.virtio, env));
  return absl::OkStatus();
}

std::function<void()> MicroVm::EdgeIrq(uint32_t gsi) {
  if (ioapic_) {
    return [ioapic = ioapic_, gsi] {
      ioapic->SetIrq(gsi, true);
      ioapic->SetIrq(gsi, false);
    };
  }
  return [vm = vm_.get(), gsi] { (void)vm->PulseIrq(gsi); };
}

void MicroVm::PressPowerButton() { power_button_(); }

VcpuRunner::Outcome MicroVm::Run() {
  absl::Status s = runner_->Start();
  if (!s.ok()) return {VcpuRunner::StopReason::kCrash, 0, std::string(s.message())};
  return runner_->Wait();
}

void MicroVm::Stop(VcpuRunner::Outcome outcome) { runner_->Stop(std::move(outcome)); }
void MicroVm::Pause() { runner_->Pause(); }
void MicroVm::Resume() { runner_->Resume(); }

absl::StatusOr<MachineState> MicroVm::SaveMachineState() {
  MachineState st;
  ASSIGN_OR_RETURN(std::vector<uint32_t> msrs, vcpu::SavableMsrs(*kvm_));
  for (auto& v : vcpus_) {
    ASSIGN_OR_RETURN(vcpu::VcpuState s, vcpu::SaveVcpuState(*v, msrs));
    st.vcpus.push_back(std::move(s));
  }
  ASSIGN_OR_RETURN(st.clock, vm_->GetClock());
  return st;
}

absl::Status MicroVm::RestoreMachineState(const MachineState& state) {
  if (state.vcpus.size() != vcpus_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "saved state has ", state.vcpus.size(), " vCPUs, this VM has ",
        vcpus_.size()));
  }
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    absl::Status s = vcpu::RestoreVcpuState(*vcpus_[i], state.vcpus[i]);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("restoring vCPU ", i, ": ", s.message()));
    }
  }
  return vm_->SetClock(state.clock);
}

size_t MicroVm::SendConsoleInput(std::string_view bytes) {
  if (virtio_ && virtio_->console()) return virtio_->console()->SendInput(bytes);
  return serial_->EnqueueInput(bytes);
}

absl::StatusOr<virtio::GpuImage> MicroVm::Screenshot(uint32_t scanout) const {
  if (!virtio_ || !virtio_->gpu()) {
    return absl::FailedPreconditionError("the VM has no GPU (start it with --gpu 2d)");
  }
  return virtio_->gpu()->Screenshot(scanout);
}

absl::StatusOr<absl::flat_hash_map<std::string, uint64_t>> MicroVm::ReadStats()
    const {
  absl::flat_hash_map<std::string, uint64_t> total;
  for (const auto& s : stats_) {
    ASSIGN_OR_RETURN(auto values, s->Read());
    for (const auto& [k, v] : values) total[k] += v;
  }
  if (virtio_) {
    for (auto& [k, v] : virtio_->Counters()) total[k] = v;
  }
  return total;
}

}  // namespace kindling
