#include "launcher/virtio_devices.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "block/backend.h"
#include "block/image.h"
#include "kindling/status_macros.h"
#include "virtio/block.h"
#include "virtio/gpu_remote.h"
#include "virtio/kvm/wiring.h"
#include "virtio/net.h"
#include "virtio/vhost_vsock.h"
#include "virtio/vsock.h"
#include "virtio/rng.h"

namespace kindling {

std::string GpuRendererPath() {
  if (const char* env = std::getenv("KINDLING_GPU_RENDERER"); env && *env) return env;
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string exe(self, n > 0 ? n : 0);
  return exe.substr(0, exe.rfind('/') + 1) + "kindling-gpu";
}

namespace {

// Thread-pool workers per disk, beside its io_uring.
constexpr unsigned kDiskPoolThreads = 4;
// Host memory a GPU's resources may take, at most.
constexpr uint64_t kMaxGpuMib = 4096;

absl::Status ValidateGpu(const GpuConfig& gpu) {
  const uint32_t kMax = virtio::Gpu2d::kMaxDimension;
  if (gpu.width == 0 || gpu.height == 0 || gpu.width > kMax || gpu.height > kMax) {
    return absl::InvalidArgumentError(absl::StrCat("--gpu width=", gpu.width, ",height=",
                                                   gpu.height, ": each must be 1 to ", kMax));
  }
  if (gpu.max_mib == 0 || gpu.max_mib > kMaxGpuMib) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu max_mib=", gpu.max_mib, ": must be 1 to ", kMaxGpuMib));
  }
  // The guest's framebuffer must fit: one scanout-sized resource.
  if (uint64_t{gpu.width} * gpu.height * 4 > (gpu.max_mib << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("--gpu max_mib=", gpu.max_mib, ": a ",
                                                   gpu.width, "x", gpu.height,
                                                   " framebuffer does not fit"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateVirtio(const VirtioConfig& config) {
  size_t count = config.disks.size() + config.nets.size() + config.rng + config.console +
                 config.vsock.has_value() + config.balloon.has_value() + config.gpu.has_value();
  if (count > kVirtioLastGsi - kVirtioFirstGsi + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        count, " virtio devices: at most ", kVirtioLastGsi - kVirtioFirstGsi + 1));
  }
  for (const DiskConfig& d : config.disks) {
    if (::access(d.path.c_str(), d.read_only ? R_OK : R_OK | W_OK) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("--disk ", d.path));
    }
    if (d.format != "raw" && d.format != "qcow2") {
      return absl::InvalidArgumentError(
          absl::StrCat("--disk ", d.path, ": format '", d.format, "': expected raw or qcow2"));
    }
  }
  for (const NetConfig& n : config.nets) {
    if (n.tap.empty() || n.tap.size() >= 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("--net tap='", n.tap, "': a TAP name of 1 to 15 characters"));
    }
  }
  if (config.vsock) {
    if (config.vsock->cid < 3 || config.vsock->cid > 0xfffffffeULL) {
      return absl::InvalidArgumentError(
          absl::StrCat("--vsock cid=", config.vsock->cid, ": must be 3 to 4294967294"));
    }
    if (config.vsock->vhost != config.vsock->uds_path.empty()) {
      return absl::InvalidArgumentError("--vsock: give exactly one of uds=PATH and vhost");
    }
    if (!config.vsock->vhost &&
        (config.vsock->uds_path.empty() || config.vsock->uds_path.size() > 100)) {
      return absl::InvalidArgumentError(
          "--vsock uds=PATH: a Unix socket path of 1 to 100 bytes is required");
    }
  }
  if (config.gpu) RETURN_IF_ERROR(ValidateGpu(*config.gpu));
  return absl::OkStatus();
}

VirtioPlan PlanVirtio(const VirtioConfig& config) {
  VirtioPlan plan;
  plan.transport = config.transport;
  auto add = [&](VirtioKind kind, size_t index) {
    size_t n = plan.slots.size();
    uint64_t base = plan.has_pci() ? kPciBarBase + n * virtio::kPciBarSize
                                   : kVirtioMmioBase + n * virtio::kMmioSize;
    plan.slots.push_back({kind, index, base, static_cast<uint32_t>(kVirtioFirstGsi + n)});
  };
  for (size_t i = 0; i < config.disks.size(); ++i) add(VirtioKind::kBlock, i);
  for (size_t i = 0; i < config.nets.size(); ++i) add(VirtioKind::kNet, i);
  if (config.rng) add(VirtioKind::kRng, 0);
  if (config.console) add(VirtioKind::kConsole, 0);
  if (config.vsock) add(VirtioKind::kVsock, 0);
  if (config.balloon) add(VirtioKind::kBalloon, 0);
  if (config.gpu) add(VirtioKind::kGpu, 0);
  return plan;
}

std::string VirtioPlan::CmdlineFragment() const {
  std::string out;
  if (has_pci()) return out;  // the guest scans the PCI bus
  for (const VirtioSlot& s : slots) {
    absl::StrAppendFormat(&out, " virtio_mmio.device=4K@%#x:%d", s.base, s.gsi);
  }
  return out;
}

std::vector<vcpu::boot::MmioDeviceDescription> VirtioPlan::DsdtDevices() const {
  std::vector<vcpu::boot::MmioDeviceDescription> out;
  if (has_pci()) return out;
  for (const VirtioSlot& s : slots) {
    out.push_back({"LNRO0005", s.base, static_cast<uint32_t>(virtio::kMmioSize), s.gsi});
  }
  return out;
}

absl::StatusOr<std::unique_ptr<VirtioDevices>> VirtioDevices::Create(const VirtioPlan& plan,
                                                                     const VirtioConfig& config,
                                                                     const VirtioEnv& env) {
  std::unique_ptr<VirtioDevices> d(new VirtioDevices());
  if (plan.has_pci() && !plan.slots.empty()) {
    d->pci_ = std::make_unique<virtio::PciBus>();
    d->msi_ = std::make_unique<virtio::MsiRouter>(*env.vm, env.ioapic ? vcpu::IrqchipMode::kSplit
                                                             : vcpu::IrqchipMode::kFull);
    RETURN_IF_ERROR(env.pio->Insert(d->pci_->config_io(), virtio::kPciConfigIoPort,
                                    virtio::kPciConfigIoSize, "pci config"));
    RETURN_IF_ERROR(env.mmio->Insert(d->pci_->ecam(), kPciEcamBase,
                                     virtio::kPciEcamSizePerBus, "pci ecam"));
  }
  virtio::EventLoop* shared = nullptr;  // rng, console and balloon share one
  for (const VirtioSlot& slot : plan.slots) {
    virtio::EventLoop* loop = nullptr;
    ASSIGN_OR_RETURN(std::shared_ptr<virtio::VirtioDevice> dev,
                     d->MakeDevice(slot, config, env, shared, loop));
    RETURN_IF_ERROR(d->Add(slot, std::move(dev), *loop, env));
  }
  if (config.packed) {
    for (auto& t : d->transports_) t->OfferPackedRings();
  }
  return d;
}

// Creates the device for `slot` and sets `loop` to the loop it runs on.
absl::StatusOr<std::shared_ptr<virtio::VirtioDevice>> VirtioDevices::MakeDevice(
    const VirtioSlot& slot, const VirtioConfig& config, const VirtioEnv& env,
    virtio::EventLoop*& shared, virtio::EventLoop*& loop) {
  auto own_loop = [&](std::string name) -> virtio::EventLoop& {
    loops_.push_back(std::make_unique<virtio::EventLoop>(std::move(name)));
    loop = loops_.back().get();
    return *loop;
  };
  switch (slot.kind) {
    case VirtioKind::kBlock: {
      const DiskConfig& disk = config.disks[slot.index];
      block::BackendOptions o;
      o.open.read_only = disk.read_only;
      o.open.format = disk.format;
      // The ring serves what maps; a few workers serve the rest (allocating
      // writes, flushes), so a VM does not start 16 threads per disk.
      o.threads = kDiskPoolThreads;
      absl::StatusOr<std::unique_ptr<block::BlockBackend>> backend =
          block::OpenBackend(disk.path, o);
      if (!backend.ok()) {
        return absl::Status(backend.status().code(), absl::StrCat("--disk ", disk.path, ": ",
                                                                  backend.status().message()));
      }
      // Parsing and completions only: the I/O runs on the backend.
      own_loop(absl::StrCat("virtio-blk", slot.index));
      return std::make_shared<virtio::Block>(
          std::move(*backend),
          virtio::BlockOptions{disk.read_only, absl::StrCat("kindling", slot.index)});
    }
    case VirtioKind::kNet: {
      const NetConfig& n = config.nets[slot.index];
      absl::StatusOr<virtio::Tap> tap = virtio::OpenTap(n.tap);
      if (!tap.ok()) {
        return absl::Status(tap.status().code(),
                            absl::StrCat("--net tap=", n.tap, ": ", tap.status().message()));
      }
      return std::make_shared<virtio::Net>(own_loop(absl::StrCat("virtio-net", slot.index)),
                                           std::move(*tap), virtio::NetOptions{n.mac});
    }
    case VirtioKind::kVsock: {
      virtio::EventLoop& vsock_loop = own_loop("virtio-vsock");
      if (config.vsock->vhost) {
        auto v = virtio::VhostVsock::Create(vsock_loop, {.guest_cid = config.vsock->cid});
        if (!v.ok()) {
          return absl::Status(v.status().code(),
                              absl::StrCat("--vsock vhost: ", v.status().message()));
        }
        return std::shared_ptr<virtio::VirtioDevice>(*v);
      }
      virtio::VsockOptions o;
      o.guest_cid = config.vsock->cid;
      o.uds_path = config.vsock->uds_path;
      absl::StatusOr<std::shared_ptr<virtio::Vsock>> v = virtio::Vsock::Create(vsock_loop, o);
      if (!v.ok()) {
        return absl::Status(v.status().code(),
                            absl::StrCat("--vsock uds=", o.uds_path, ": ", v.status().message()));
      }
      return std::shared_ptr<virtio::VirtioDevice>(*v);
    }
    case VirtioKind::kGpu: {
      // Its own loop: a large transfer must not hold up the small devices.
      own_loop("virtio-gpu");
      const GpuConfig& g = *config.gpu;
      virtio::GpuLimits limits{.width = g.width, .height = g.height,
                               .max_host_bytes = g.max_mib << 20};
      std::unique_ptr<virtio::Renderer3d> renderer;
      if (g.virgl) {
        const std::string path = GpuRendererPath();
        auto r = virtio::RemoteRenderer::Spawn(path, *env.memory, limits.max_host_bytes);
        if (!r.ok()) {
          return absl::Status(r.status().code(), absl::StrCat("--gpu virgl (renderer ", path,
                                                              "): ", r.status().message()));
        }
        std::fprintf(stderr, "kindling: virtio-gpu: %s\n", (*r)->info().name.c_str());
        renderer = std::move(*r);
      }
      gpu_ = std::make_shared<virtio::Gpu>(limits, *env.memory, std::move(renderer));
      return std::shared_ptr<virtio::VirtioDevice>(gpu_);
    }
    default:
      break;
  }
  if (shared == nullptr) shared = &own_loop("virtio-misc");
  loop = shared;
  switch (slot.kind) {
    case VirtioKind::kRng:
      return std::make_shared<virtio::Rng>();
    case VirtioKind::kConsole:
      console_ = std::make_shared<virtio::Console>(*shared, env.console_output);
      return std::shared_ptr<virtio::VirtioDevice>(console_);
    case VirtioKind::kBalloon: {
      const BalloonConfig& b = *config.balloon;
      virtio::BalloonOptions o;
      o.deflate_on_oom = b.deflate_on_oom;
      o.stats_interval_s = b.stats_interval_s;
      o.free_page_reporting = b.free_page_reporting;
      o.on_stats = env.on_balloon_stats;
      balloon_ = std::make_shared<virtio::Balloon>(*shared, o);
      balloon_->SetTarget(b.amount_mib);
      return std::shared_ptr<virtio::VirtioDevice>(balloon_);
    }
    default:
      return absl::InternalError("unknown virtio device kind");
  }
}

absl::Status VirtioDevices::Add(const VirtioSlot& slot,
                                std::shared_ptr<virtio::VirtioDevice> device,
                                virtio::EventLoop& loop, const VirtioEnv& env) {
  if (pci_) return AddPci(slot, std::move(device), loop, env);
  return AddMmio(slot, std::move(device), loop, env);
}

absl::Status VirtioDevices::AddPci(const VirtioSlot& slot,
                                   std::shared_ptr<virtio::VirtioDevice> device,
                                   virtio::EventLoop& loop, const VirtioEnv& env) {
  auto mapper = std::make_unique<virtio::PciBarMapper>(*env.vm, *env.mmio, loop);
  virtio::PciTransportOptions o;
  o.bar_address = static_cast<uint32_t>(slot.base);
  // One irqfd-backed GSI per MSI-X vector (queues + config).
  std::vector<int> sources;
  for (int v = 0; v <= device->num_queues(); ++v) {
    ASSIGN_OR_RETURN(int src, msi_->AddSource());
    sources.push_back(src);
  }
  o.send_msi = [router = msi_.get(), sources](uint16_t vector, uint64_t address, uint32_t data) {
    if (vector < sources.size()) router->Send(sources[vector], address, data);
  };
  o.on_bar_change = [m = mapper.get()](std::optional<uint64_t> at) { m->Move(at); };
  auto t = std::make_shared<virtio::PciTransport>(std::move(device), *env.memory, loop,
                                                  std::move(o));
  RETURN_IF_ERROR(mapper->Attach(t));
  RETURN_IF_ERROR(pci_->Add(t).status());
  bar_mappers_.push_back(std::move(mapper));
  t->SetFailureListener(env.on_device_failure);
  transports_.push_back(std::move(t));
  return absl::OkStatus();
}

absl::Status VirtioDevices::AddMmio(const VirtioSlot& slot,
                                    std::shared_ptr<virtio::VirtioDevice> device,
                                    virtio::EventLoop& loop, const VirtioEnv& env) {
  std::function<void()> raise;
  if (env.ioapic) {
    raise = [ioapic = env.ioapic, gsi = slot.gsi] {
      ioapic->SetIrq(gsi, true);
      ioapic->SetIrq(gsi, false);
    };
  } else {
    ASSIGN_OR_RETURN(virtio::IrqLine irq, virtio::IrqfdLine(*env.vm, slot.gsi));
    raise = std::move(irq.raise);
    fds_.push_back(std::move(irq.fd));
  }
  auto t = std::make_shared<virtio::MmioTransport>(std::move(device), *env.memory, loop,
                                                   std::move(raise));
  RETURN_IF_ERROR(env.mmio->Insert(t, slot.base, virtio::kMmioSize, t->device().name()));
  // Queue notifications go straight from KVM to the device's loop.
  ASSIGN_OR_RETURN(std::vector<vm_memory::UniqueFd> notify,
                   virtio::WireMmioNotify(*env.vm, loop, t, slot.base));
  for (auto& fd : notify) fds_.push_back(std::move(fd));
  t->SetFailureListener(env.on_device_failure);
  transports_.push_back(std::move(t));
  return absl::OkStatus();
}

VirtioDevices::~VirtioDevices() {
  // Threads first (nothing runs any more), then the devices and transports
  // (some hold sockets bound to a loop's io_context), then the loops.
  // Every holder of a transport lets go before the loops are freed: the
  // PCI bus holds its functions (seen: Balloon's destructor reaching its
  // freed loop after a guest reboot on --transport pci).
  for (auto& l : loops_) l->Stop();
  bar_mappers_.clear();
  transports_.clear();
  pci_.reset();
  console_.reset();
  balloon_.reset();
  gpu_.reset();
  msi_.reset();
  loops_.clear();
}

std::optional<vcpu::boot::PciEcamDescription> VirtioPlan::Ecam() const {
  if (!has_pci()) return std::nullopt;
  // The host bridge forwards the hole from the first BAR up to the ECAM.
  return vcpu::boot::PciEcamDescription{kPciEcamBase, 0, static_cast<uint32_t>(kPciBarBase),
                                        static_cast<uint32_t>(kPciEcamBase - kPciBarBase)};
}

namespace {

const char* KindName(virtio::DeviceType t) {
  switch (t) {
    case virtio::DeviceType::kNet: return "net";
    case virtio::DeviceType::kBlock: return "blk";
    case virtio::DeviceType::kConsole: return "console";
    case virtio::DeviceType::kRng: return "rng";
    case virtio::DeviceType::kBalloon: return "balloon";
    case virtio::DeviceType::kVsock: return "vsock";
    case virtio::DeviceType::kGpu: return "gpu";
  }
  return "device";
}

}  // namespace

std::vector<std::pair<std::string, uint64_t>> VirtioDevices::Counters() const {
  std::vector<std::pair<std::string, uint64_t>> out;
  std::map<std::string, int> seen;
  for (const auto& t : transports_) {
    const virtio::VirtioDevice& d = t->device();
    std::string kind = KindName(d.type());
    std::string prefix = absl::StrCat("virtio.", kind, seen[kind]++, ".");
    for (auto& [name, value] : d.Counters()) out.emplace_back(prefix + name, value);
  }
  return out;
}

}  // namespace kindling
