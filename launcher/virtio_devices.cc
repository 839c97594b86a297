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
  auto add = [&](VirtioKind kind, size_t index) {
    size_t n = plan.slots.size();
    plan.slots.push_back({kind, index, kVirtioMmioBase + n * virtio::kMmioSize,
                          static_cast<uint32_t>(kVirtioFirstGsi + n)});
  };
  for (size_t i = 0; i < config.disks.size(); ++i) add(VirtioKind::kBlock, i);
  if (config.rng) add(VirtioKind::kRng, 0);
  if (config.console) add(VirtioKind::kConsole, 0);
  return plan;
}

std::string VirtioPlan::CmdlineFragment() const {
  std::string out;
  for (const VirtioSlot& s : slots) {
    absl::StrAppendFormat(&out, " virtio_mmio.device=4K@%#x:%d", s.base, s.gsi);
  }
  return out;
}

std::vector<vcpu::boot::MmioDeviceDescription> VirtioPlan::DsdtDevices() const {
  std::vector<vcpu::boot::MmioDeviceDescription> out;
  for (const VirtioSlot& s : slots) {
    out.push_back({"LNRO0005", s.base, static_cast<uint32_t>(virtio::kMmioSize), s.gsi});
  }
  return out;
}

absl::StatusOr<std::unique_ptr<VirtioDevices>> VirtioDevices::Create(const VirtioPlan& plan,
                                                                     const VirtioConfig& config,
                                                                     const VirtioEnv& env) {
  std::unique_ptr<VirtioDevices> d(new VirtioDevices());
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

}  // namespace kindling
