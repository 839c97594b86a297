#include "launcher/virtio_devices.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "block/image.h"
#include "kindling/status_macros.h"
#include "virtio/block.h"
#include "virtio/rng.h"

namespace kindling {
namespace {

absl::StatusOr<vm_memory::UniqueFd> MakeEventFd() {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return absl::ErrnoToStatus(errno, "eventfd");
  return vm_memory::UniqueFd(fd);
}

}  // namespace

// Keeps a virtio-pci BAR's MMIO range and notification ioeventfds where
// the guest has put the BAR (decoding on), or nowhere (decoding off).
class PciBarMapper {
 public:
  PciBarMapper(const VirtioEnv& env, virtio::EventLoop& loop) : env_(env), loop_(loop) {}

  absl::Status Attach(std::shared_ptr<virtio::PciTransport> t) {
    t_ = std::move(t);
    for (uint16_t q = 0; q < t_->num_queues(); ++q) {
      ASSIGN_OR_RETURN(vm_memory::UniqueFd efd, MakeEventFd());
      loop_.WatchEventFd(efd.get(), [t = t_.get(), q] { t->Notify(q); });
      notify_fds_.push_back(std::move(efd));
    }
    return absl::OkStatus();
  }
  void Move(std::optional<uint64_t> to) {
    if (at_) {
      env_.mmio->Remove(*at_);
      ForEachNotify(*at_, [&](int fd, uint64_t a) {
        (void)env_.vm->DeassignIoeventfd(fd, a, 0, /*pio=*/false);
      });
    }
    at_ = to;
    if (!to) return;
    absl::Status s = env_.mmio->Insert(t_->bar(), *to, virtio::kPciBarSize, t_->device().name());
    if (!s.ok()) {
      absl::FPrintF(stderr, "kindling: %s: BAR 0 at %#x: %s\n", t_->device().name(), *to,
                    s.message());
      at_.reset();
      return;
    }
    // Without an ioeventfd the write still reaches the BAR as an MMIO exit.
    ForEachNotify(*to, [&](int fd, uint64_t a) {
      (void)env_.vm->AssignIoeventfd(fd, a, 0, /*pio=*/false);
    });
  }

 private:
  template <typename Fn>
  void ForEachNotify(uint64_t bar, Fn&& fn) {
    for (size_t q = 0; q < notify_fds_.size(); ++q) {
      fn(notify_fds_[q].get(),
         bar + virtio::kPciNotifyOffset + q * virtio::kPciNotifyMultiplier);
    }
  }

  VirtioEnv env_;
  virtio::EventLoop& loop_;
  std::shared_ptr<virtio::PciTransport> t_;
  std::vector<vm_memory::UniqueFd> notify_fds_;
  std::optional<uint64_t> at_;
};

absl::Status ValidateVirtio(const VirtioConfig& config) {
  size_t count = config.disks.size() + config.rng + config.console;
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
  if (config.rng) add(VirtioKind::kRng, 0);
  if (config.console) add(VirtioKind::kConsole, 0);
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
    d->msi_ = std::make_unique<MsiRouter>(*env.vm, env.ioapic ? vcpu::IrqchipMode::kSplit
                                                             : vcpu::IrqchipMode::kFull);
    RETURN_IF_ERROR(env.pio->Insert(d->pci_->config_io(), virtio::kPciConfigIoPort,
                                    virtio::kPciConfigIoSize, "pci config"));
    RETURN_IF_ERROR(env.mmio->Insert(d->pci_->ecam(), kPciEcamBase,
                                     virtio::kPciEcamSizePerBus, "pci ecam"));
  }
  virtio::EventLoop* shared = nullptr;  // rng and console share one loop
  for (const VirtioSlot& slot : plan.slots) {
    if (slot.kind == VirtioKind::kBlock) {
      const DiskConfig& disk = config.disks[slot.index];
      block::OpenOptions o;
      o.read_only = disk.read_only;
      o.format = disk.format;
      absl::StatusOr<std::unique_ptr<block::Image>> img = block::OpenImage(disk.path, o);
      if (!img.ok()) {
        return absl::Status(img.status().code(),
                            absl::StrCat("--disk ", disk.path, ": ", img.status().message()));
      }
      auto blk = std::make_shared<virtio::Block>(
          std::move(*img), virtio::BlockOptions{disk.read_only, absl::StrCat("kindling", slot.index)});
      // Disk I/O blocks its thread: each disk gets a loop of its own.
      d->loops_.push_back(std::make_unique<virtio::EventLoop>(absl::StrCat("virtio-blk", slot.index)));
      RETURN_IF_ERROR(d->Add(slot, blk, *d->loops_.back(), env));
      continue;
    }
    if (shared == nullptr) {
      d->loops_.push_back(std::make_unique<virtio::EventLoop>("virtio-misc"));
      shared = d->loops_.back().get();
    }
    if (slot.kind == VirtioKind::kRng) {
      RETURN_IF_ERROR(d->Add(slot, std::make_shared<virtio::Rng>(), *shared, env));
    } else {
      d->console_ = std::make_shared<virtio::Console>(*shared, env.console_output);
      RETURN_IF_ERROR(d->Add(slot, d->console_, *shared, env));
    }
  }
  return d;
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
  auto mapper = std::make_unique<PciBarMapper>(env, loop);
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
    ASSIGN_OR_RETURN(vm_memory::UniqueFd irqfd, MakeEventFd());
    RETURN_IF_ERROR(env.vm->AssignIrqfd(irqfd.get(), slot.gsi));
    raise = [fd = irqfd.get()] {
      uint64_t one = 1;
      while (::write(fd, &one, sizeof(one)) < 0 && errno == EINTR) {
      }
    };
    fds_.push_back(std::move(irqfd));
  }
  uint16_t queues = device->num_queues();
  auto t = std::make_shared<virtio::MmioTransport>(std::move(device), *env.memory, loop,
                                                   std::move(raise));
  RETURN_IF_ERROR(env.mmio->Insert(t, slot.base, virtio::kMmioSize, t->device().name()));
  // Queue notifications go straight from KVM to the device's loop.
  for (uint16_t q = 0; q < queues; ++q) {
    ASSIGN_OR_RETURN(vm_memory::UniqueFd efd, MakeEventFd());
    RETURN_IF_ERROR(env.vm->AssignIoeventfd(efd.get(), slot.base + virtio::kMmioQueueNotify, 4,
                                            /*pio=*/false, q));
    loop.WatchEventFd(efd.get(), [t = t.get(), q] { t->Notify(q); });
    fds_.push_back(std::move(efd));
  }
  transports_.push_back(std::move(t));
  return absl::OkStatus();
}

VirtioDevices::~VirtioDevices() {
  loops_.clear();  // joins the threads before the devices go away
}

std::optional<vcpu::boot::PciEcamDescription> VirtioPlan::Ecam() const {
  if (!has_pci()) return std::nullopt;
  return vcpu::boot::PciEcamDescription{kPciEcamBase, 0};
}

}  // namespace kindling
