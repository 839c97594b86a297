// MicroVm: composes vm-memory and vcpu into a bootable x86-64 microVM —
// guest RAM, KVM VM and memslots, interrupt controllers, kernel/initrd,
// MP + ACPI tables, CPUID (PV switches, CPU template, topology), the boot
// vCPU's registers, the legacy devices, and the vCPU threads.
//
//   VmConfig cfg;
//   cfg.kernel = "tests/guests/hello.elf";
//   ASSIGN_OR_RETURN(auto vm, MicroVm::Create(cfg));
//   VcpuRunner::Outcome out = vm->Run();   // until the guest exits or Stop()
#ifndef KINDLING_LAUNCHER_MICROVM_H_
#define KINDLING_LAUNCHER_MICROVM_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "launcher/virtio_devices.h"
#include "migration/precopy.h"
#include "migration/snapshot.h"
#include "vcpu/boot/kernel_loader.h"
#include "vcpu/bus.h"
#include "vcpu/cpuid.h"
#include "vcpu/devices/ioapic.h"
#include "vcpu/devices/serial.h"
#include "vcpu/kvm.h"
#include "vcpu/stats.h"
#include "vcpu/vcpu_runner.h"
#include "vcpu/vcpu_state.h"
#include "vm-memory/guest_memory.h"

namespace kindling {

struct VmConfig {
  std::string kernel;
  std::string initrd;  // empty: none
  // For an ELF with a PVH note: PVH (default) or the 64-bit boot protocol.
  vcpu::boot::ElfEntry elf_entry = vcpu::boot::ElfEntry::kPreferPvh;
  std::string cmdline = "console=ttyS0 reboot=k panic=1 pci=off";
  uint32_t cpus = 1;
  uint64_t memory_mib = 128;
  std::string cpu_template;  // path to Firecracker-format JSON; empty: none
  // A template whose CPUID modifiers narrow what this host offers (KVM's
  // supported CPUID): the base of a new guest's CPUID and what an incoming
  // guest's is checked against. Empty: KVM's table as it is.
  std::string host_cpu_template;
  vcpu::PvFeatures pv;
  // Split (LAPIC in KVM, IOAPIC here, no PIC/PIT) by default: a VM with
  // the full in-kernel irqchip costs ~10 ms more to create and tear down.
  vcpu::IrqchipMode irqchip = vcpu::IrqchipMode::kSplit;
  bool hugepages = false;
  // Where guest console bytes go (default: stdout, unbuffered).
  std::function<void(uint8_t)> console_output;
  // Device events (see VirtioEnv); default: the device's reason is logged
  // on stderr only.
  virtio::Transport::FailureListener on_device_failure;
  std::function<void(const std::vector<virtio::BalloonStat>&)> on_balloon_stats;
  std::string kvm_device = "/dev/kvm";
  // Open each vCPU's KVM stats fd (ReadStats); off by default, it costs
  // start-up time.
  bool collect_stats = false;
  // virtio-mmio devices: disks, rng, console.
  VirtioConfig virtio;
};

// This host's RAM in MiB (MemTotal), 0 if /proc/meminfo cannot be read.
uint64_t HostMemoryMib();

// Checks a config without touching KVM: sizes, paths, template syntax.
absl::Status ValidateConfig(const VmConfig& config);

// What a paused VM's CPUs and clock hold; guest RAM is copied separately.
struct MachineState {
  std::vector<vcpu::VcpuState> vcpus;
  kvm_clock_data clock;
};

class MicroVm {
 public:
  static absl::StatusOr<std::unique_ptr<MicroVm>> Create(const VmConfig& config);
  // A VM from a snapshot directory written by SaveSnapshot, ready to Run():
  // its shape (vCPUs, RAM layout, irqchip) and state come from the
  // snapshot; of `config` only the host side is used (console sink,
  // callbacks, KVM device, stats, hugepages). The kernel is not needed.
  // kLazy maps the memory file privately (pages load on first touch).
  static absl::StatusOr<std::unique_ptr<MicroVm>> Restore(
      const VmConfig& config, const std::string& dir,
      ::migration::RestoreMode mode = ::migration::RestoreMode::kEager);
  ~MicroVm();

  // Starts the vCPUs and blocks until the VM stops.
  vcpu::VcpuRunner::Outcome Run();
  // Safe from any thread (e.g. a signal-waiting thread).
  void Stop(vcpu::VcpuRunner::Outcome outcome);
  void Pause();
  void Resume();
  // Saves every vCPU and the KVM clock; the VM must be paused (or not yet
  // started).
  absl::StatusOr<MachineState> SaveMachineState();
  // Loads a saved state into this VM before Run(): the VM must have been
  // created with the same config, and guest RAM restored by the caller.
  absl::Status RestoreMachineState(const MachineState& state);
  // Writes the VM's full state and RAM to `dir` (libs/migration's format);
  // the VM must be paused or not yet started. Virtio devices are brought
  // to rest and held while RAM is written; a device whose state cannot be
  // saved (vsock) makes it fail up front, naming the device.
  // With `diff`, only the pages written since this VM's last snapshot go
  // into dir/memory, and the state names that snapshot as its base
  // (migration::WriteDiffSnapshot); FAILED_PRECONDITION without one. From
  // its first snapshot on the VM keeps KVM's dirty log on; a failed
  // snapshot or a migration attempt drops the base.
  absl::Status SaveSnapshot(const std::string& dir, bool diff = false);
  // Live migration (launcher/migration.cc), source side: sends this
  // running VM over the connected socket `fd` (libs/migration's stream) and
  // stops it once the destination took over; any error before that leaves
  // it running as before.
  absl::Status MigrateTo(int fd, const ::migration::MigrationOptions& options,
                         const std::function<void(const ::migration::MigrationProgress&)>&
                             progress);
  // Destination side: a VM built from the stream on `conn`, ready to Run()
  // (the source has handed over). Of `config` only the host side is used.
  // A post-copy keeps `conn` and pages RAM in while the guest runs; if the
  // stream fails after the switch-over the guest cannot go on (its pages
  // will never come): `on_postcopy_failure` is called, by default it prints
  // the error and ends the process with status 125 (the source keeps its
  // paused copy).
  static absl::StatusOr<std::unique_ptr<MicroVm>> Incoming(
      const VmConfig& config, vm_memory::UniqueFd conn,
      absl::Duration peer_timeout = absl::Seconds(60),
      std::function<void(const absl::Status&)> on_postcopy_failure = nullptr);
  // The same for a source that has said HELLO (migration::AcceptSource).
  static absl::StatusOr<std::unique_ptr<MicroVm>> Incoming(
      const VmConfig& config, ::migration::IncomingSource source,
      absl::Duration peer_timeout = absl::Seconds(60),
      std::function<void(const absl::Status&)> on_postcopy_failure = nullptr);
  // A post-copy destination: waits until every page has come.
  absl::Status WaitPostcopy(absl::Duration timeout);
  // A post-copy destination's page server (faults, requests), else null.
  const ::migration::PostcopyPager* postcopy() const { return postcopy_.get(); }
  // Presses the ACPI power button: the guest sees a Notify on \_SB.PWRB
  // through the GED's interrupt and decides (Linux with acpid or systemd
  // powers off, which stops the VM with status 0). Safe from any thread.
  void PressPowerButton();
  // Bytes for the guest's console (the virtio console when there is one,
  // else the serial port); returns how many were queued.
  size_t SendConsoleInput(std::string_view bytes);
  // What the virtio-gpu's scanout shows now (see virtio::Gpu::Screenshot);
  // FAILED_PRECONDITION for a VM without --gpu. Safe from any thread.
  absl::StatusOr<virtio::GpuImage> Screenshot(uint32_t scanout = 0) const;
  // Per-vCPU KVM statistics (exits, irq_injections, ...), summed over
  // vCPUs, and each virtio device's counters ("virtio.blk0.read_bytes",
  // VirtioDevices::Counters).
  absl::StatusOr<absl::flat_hash_map<std::string, uint64_t>> ReadStats() const;

  vm_memory::GuestMemory& memory() { return *memory_; }
  vcpu::Vm& vm() { return *vm_; }
  std::vector<std::unique_ptr<vcpu::Vcpu>>& vcpus() { return vcpus_; }

 private:
  friend class VmMigrationSource;
  MicroVm() = default;
  absl::Status Build(const VmConfig& config);
  absl::Status SetUpMemory(const VmConfig& config);
  absl::Status LoadGuest(const VmConfig& config);
  absl::Status SetUpVcpus(const VmConfig& config);
  // What this host offers a guest: KVM's supported CPUID (or, with
  // `guest_visible`, what a vCPU given it sees: vcpu::GuestVisibleCpuid),
  // narrowed by config.host_cpu_template.
  absl::StatusOr<vcpu::CpuidTable> HostCpuid(const VmConfig& config,
                                             bool guest_visible = false) const;
  // The pre-migration (and pre-restore) check: every vCPU's CPUID in `s`
  // must be one this host can give (vcpu/cpu_compat.h).
  absl::Status CheckGuestCpus(const VmConfig& config, const kindling::migration::v1::Snapshot& s) const;
  absl::Status CreateKvmVm(const VmConfig& config);
  // Creates vCPU `id` with `cpuid` (and its stats fd if asked).
  absl::StatusOr<vcpu::Vcpu*> AddVcpu(const VmConfig& config, uint32_t id,
                                      std::span<const kvm_cpuid_entry2> cpuid);
  void CreateRunner();
  // Snapshot halves (launcher/snapshot.cc).
  // A saved machine's RAM regions must be kindling's x86 layout.
  static absl::Status CheckRamLayout(const kindling::migration::v1::Machine& m);
  // `config`'s host side with the shape and virtio devices of a saved
  // state (`where` names it in errors).
  static absl::StatusOr<VmConfig> ShapeFromState(const VmConfig& config,
                                                 const kindling::migration::v1::Snapshot& s,
                                                 const std::string& where);
  // With memory_ loaded: the machine, its devices and their state. In two
  // halves for a migration's destination: the machine and devices as the
  // state describes them (vCPUs with their CPUID; no register state
  // needed), then the state loaded into them and the queues kicked.
  absl::Status BuildFromState(const VmConfig& config,
                              const kindling::migration::v1::Snapshot& s,
                              const std::string& where);
  // A migration destination's VM, built from the HELLO's description.
  static absl::StatusOr<std::unique_ptr<MicroVm>> PrepareIncoming(
      const VmConfig& config, const kindling::migration::v1::Snapshot& skeleton);
  absl::Status PrepareFromState(const VmConfig& config,
                                const kindling::migration::v1::Snapshot& s);
  absl::Status LoadFromState(const kindling::migration::v1::Snapshot& s,
                             const std::string& where);
  absl::StatusOr<kindling::migration::v1::Snapshot> CaptureState();
  // KVM_MEM_LOG_DIRTY_PAGES on (clearing the logs and the VMM's own dirty
  // bits) or off on every memslot.
  absl::Status SetDirtyLogging(bool on);
  // Pages dirtied since the last call (or SetDirtyLogging(true)), per RAM
  // region: the guest's (KVM's log) and the devices' (the VMM's bits).
  absl::StatusOr<::migration::PageBitmaps> TakeDirtyPages();
  // After a snapshot written to `dir`: it becomes the base of the next
  // diff, and the dirty log starts afresh.
  absl::Status StartDiffBase(const std::string& dir, const std::string& snapshot_id);
  absl::Status LoadState(const kindling::migration::v1::Snapshot& s);
  absl::Status SetUpDevices(const VmConfig& config);
  // A rising edge on `gsi`: through the userspace IOAPIC (split) or KVM.
  std::function<void()> EdgeIrq(uint32_t gsi);

  std::unique_ptr<vcpu::Kvm> kvm_;
  std::unique_ptr<vm_memory::GuestMemory> memory_;
  // A uffd restore's page server: destroyed after everything below (vCPUs,
  // devices) that may still touch guest RAM, before the RAM itself.
  std::unique_ptr<::migration::UffdPager> pager_;
  // A post-copy destination's stream and page server (the same rule).
  vm_memory::UniqueFd incoming_;
  std::unique_ptr<::migration::PostcopyPager> postcopy_;
  std::unique_ptr<vcpu::Vm> vm_;
  std::vector<std::unique_ptr<vcpu::Vcpu>> vcpus_;
  std::vector<std::unique_ptr<vcpu::KvmStats>> stats_;
  vcpu::Bus pio_;
  vcpu::Bus mmio_;
  std::shared_ptr<vcpu::Serial> serial_;
  std::shared_ptr<vcpu::Ioapic> ioapic_;  // split irqchip only
  std::function<void()> power_button_;
  VirtioPlan virtio_plan_;
  VirtioConfig virtio_config_;  // what the devices were made from (snapshots)
  std::unique_ptr<VirtioDevices> virtio_;
  std::unique_ptr<vcpu::VcpuRunner> runner_;
  vcpu::boot::LoadedKernel kernel_;
  bool dirty_logging_ = false;
  // The snapshot a diff is taken against (SaveSnapshot), if any.
  std::optional<kindling::migration::v1::DiffBase> diff_base_;
};

}  // namespace kindling

#endif  // KINDLING_LAUNCHER_MICROVM_H_
