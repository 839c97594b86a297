// VirtioDevices: the VM's virtio-mmio devices — where each sits (MMIO
// window, GSI), how the guest learns of them (kernel command line and
// DSDT), and their event loops, transports, irqfds and ioeventfds.
//
//   VirtioPlan plan = PlanVirtio(config.virtio);       // before the ACPI tables
//   cmdline += plan.CmdlineFragment();
//   platform.dsdt_devices = plan.DsdtDevices();
//   ASSIGN_OR_RETURN(auto devs, VirtioDevices::Create(plan, config.virtio, env));
#ifndef KINDLING_LAUNCHER_VIRTIO_DEVICES_H_
#define KINDLING_LAUNCHER_VIRTIO_DEVICES_H_

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migration/snapshot.pb.h"
#include "vcpu/boot/platform_tables.h"
#include "vcpu/bus.h"
#include "vcpu/devices/ioapic.h"
#include "vcpu/kvm.h"
#include "virtio/balloon.h"
#include "virtio/console.h"
#include "virtio/event_loop.h"
#include "virtio/gpu.h"
#include "virtio/kvm/msi_router.h"
#include "virtio/kvm/wiring.h"
#include "virtio/mmio.h"
#include "virtio/pci.h"
#include "virtio/pci_bus.h"
#include "vm-memory/guest_memory.h"
#include "vm-memory/unique_fd.h"

namespace kindling {

struct DiskConfig {
  std::string path;
  bool read_only = false;
  // Image format; raw unless asked: probing would let a guest that writes
  // a qcow2 header into its raw disk choose a backing file on the host.
  std::string format = "raw";
};

enum class VirtioTransport { kMmio, kPci };

struct NetConfig {
  std::string tap;                              // an existing or new TAP
  std::optional<std::array<uint8_t, 6>> mac;    // random if unset
};

struct VsockConfig {
  uint64_t cid = 3;
  std::string uds_path;  // Firecracker's convention; see libs/virtio/README.md
  bool vhost = false;    // instead of uds_path: /dev/vhost-vsock, AF_VSOCK on the host
};

struct BalloonConfig {
  uint64_t amount_mib = 0;  // initial target
  bool deflate_on_oom = false;
  uint32_t stats_interval_s = 0;
  bool free_page_reporting = true;
};

// virtio-gpu: scanout 0's mode and the host memory its resources may take
// (--gpu 2d|virgl,width=W,height=H,max_mib=N). With virgl, 3D commands go
// to a renderer process (kindling-gpu: $KINDLING_GPU_RENDERER, else the
// file of that name beside this program).
struct GpuConfig {
  uint32_t width = 1280;
  uint32_t height = 800;
  uint64_t max_mib = 256;
  bool virgl = false;
};

// Where kindling-gpu is: $KINDLING_GPU_RENDERER, else beside this program.
std::string GpuRendererPath();

struct VirtioConfig {
  VirtioTransport transport = VirtioTransport::kMmio;
  // Offer VIRTIO_F_RING_PACKED (every device but vhost-vsock); the driver
  // chooses. Off by default, as in QEMU.
  bool packed = false;
  std::vector<DiskConfig> disks;
  std::vector<NetConfig> nets;
  bool rng = false;
  bool console = false;  // virtio-console (hvc0) in addition to ttyS0
  std::optional<VsockConfig> vsock;
  std::optional<BalloonConfig> balloon;
  std::optional<GpuConfig> gpu;
};

// Checks paths and counts without opening anything.
absl::Status ValidateVirtio(const VirtioConfig& config);

// The devices a snapshot's virtio records describe, as a VirtioConfig
// whose PlanVirtio puts each record back in its slot. Bounds every field.
absl::StatusOr<VirtioConfig> VirtioConfigFromSnapshot(
    const kindling::migration::v1::Snapshot& s);

enum class VirtioKind { kBlock, kNet, kRng, kConsole, kVsock, kBalloon, kGpu };

struct VirtioSlot {
  VirtioKind kind;
  size_t index;      // into config.disks / config.nets
  uint64_t base;     // mmio: register window; pci: BAR 0
  uint32_t gsi;      // mmio only
};

struct VirtioPlan {
  VirtioTransport transport = VirtioTransport::kMmio;
  std::vector<VirtioSlot> slots;
  bool has_pci() const { return transport == VirtioTransport::kPci; }
  // " virtio_mmio.device=4K@0xd0000000:5 ..." (leading space; "" if none).
  std::string CmdlineFragment() const;
  std::vector<vcpu::boot::MmioDeviceDescription> DsdtDevices() const;
  // PCI: the ECAM window for MCFG (reserved in the memory map too).
  std::optional<vcpu::boot::PciEcamDescription> Ecam() const;
};

inline constexpr uint64_t kVirtioMmioBase = 0xd0000000;
// virtio-pci: BARs from the bottom of the 32-bit hole, ECAM for bus 0 below
// the IOAPIC.
inline constexpr uint64_t kPciBarBase = 0xc0000000;
inline constexpr uint64_t kPciEcamBase = 0xeff00000;
inline constexpr uint32_t kVirtioFirstGsi = 5;
inline constexpr uint32_t kVirtioLastGsi = 23;

VirtioPlan PlanVirtio(const VirtioConfig& config);

// What the devices attach to.
struct VirtioEnv {
  vm_memory::GuestMemory* memory;
  vcpu::Vm* vm;
  vcpu::Bus* mmio;
  vcpu::Bus* pio;
  std::shared_ptr<vcpu::Ioapic> ioapic;  // split irqchip; null with full
  std::function<void(std::string_view)> console_output;
  // A device entered DEVICE_NEEDS_RESET (device name, reason); may be empty.
  virtio::Transport::FailureListener on_device_failure;
  // The balloon driver sent statistics; may be empty.
  std::function<void(const std::vector<virtio::BalloonStat>&)> on_balloon_stats;
};

class VirtioDevices {
 public:
  static absl::StatusOr<std::unique_ptr<VirtioDevices>> Create(const VirtioPlan& plan,
                                                               const VirtioConfig& config,
                                                               const VirtioEnv& env);
  ~VirtioDevices();
  // The virtio console, if any (for stdin forwarding).
  virtio::Console* console() { return console_.get(); }
  virtio::Balloon* balloon() { return balloon_.get(); }
  virtio::Gpu* gpu() { return gpu_.get(); }
  size_t device_count() const { return transports_.size(); }
  // Every device's counters (VirtioDevice::Counters) as
  // "virtio.KIND N.NAME", e.g. "virtio.blk0.read_bytes", "virtio.net1.tx_frames"
  // (N counts devices of that kind in plan order). From any thread.
  std::vector<std::pair<std::string, uint64_t>> Counters() const;

  // ---- snapshots (launcher/virtio_state.cc) ----
  // Whether every device's state can be saved; the error names the device.
  absl::Status CheckSnapshot() const;
  // With the vCPUs stopped: brings every device to rest and holds its loop
  // until the holds are dropped (after guest RAM is saved, so no device
  // writes it meanwhile).
  absl::StatusOr<std::vector<std::unique_ptr<virtio::LoopHold>>> Quiesce(
      absl::Duration timeout);
  // One record per device, in plan order, with what backs it (`config`).
  // While the loops are held; without `with_state` (kind and backing only,
  // a migration's description of the machine) at any time.
  absl::StatusOr<std::vector<kindling::migration::v1::Device>> SaveState(
      const VirtioPlan& plan, const VirtioConfig& config, bool with_state = true) const;
  // Loads saved records (plan order) into these freshly created devices;
  // each must be the kind its slot holds.
  absl::Status RestoreState(const VirtioPlan& plan,
                            const std::vector<const kindling::migration::v1::Device*>& records);
  // After a restore, before the vCPUs run (Transport::KickAfterRestore).
  void KickAfterRestore();

 private:
  VirtioDevices() = default;
  absl::Status Add(const VirtioSlot& slot, std::shared_ptr<virtio::VirtioDevice> device,
                   virtio::EventLoop& loop, const VirtioEnv& env);

  absl::StatusOr<std::shared_ptr<virtio::VirtioDevice>> MakeDevice(
      const VirtioSlot& slot, const VirtioConfig& config, const VirtioEnv& env,
      virtio::EventLoop*& shared, virtio::EventLoop*& loop);
  absl::Status AddMmio(const VirtioSlot& slot, std::shared_ptr<virtio::VirtioDevice> device,
                       virtio::EventLoop& loop, const VirtioEnv& env);
  absl::Status RestoreTransport(virtio::Transport& t,
                                const kindling::migration::v1::Virtio& record);
  absl::Status RestoreGpu(const kindling::migration::v1::VirtioGpu& record);
  absl::Status AddPci(const VirtioSlot& slot, std::shared_ptr<virtio::VirtioDevice> device,
                      virtio::EventLoop& loop, const VirtioEnv& env);

  std::vector<std::unique_ptr<virtio::EventLoop>> loops_;
  std::vector<std::shared_ptr<virtio::Transport>> transports_;
  std::unique_ptr<virtio::PciBus> pci_;
  std::unique_ptr<virtio::MsiRouter> msi_;
  std::vector<std::unique_ptr<virtio::PciBarMapper>> bar_mappers_;
  std::vector<vm_memory::UniqueFd> fds_;  // irqfds and ioeventfds
  std::shared_ptr<virtio::Console> console_;
  std::shared_ptr<virtio::Balloon> balloon_;
  std::shared_ptr<virtio::Gpu> gpu_;
};

}  // namespace kindling

#endif  // KINDLING_LAUNCHER_VIRTIO_DEVICES_H_
