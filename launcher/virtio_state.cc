// VirtioDevices' snapshot half: which backing each device records, the
// quiesce-and-hold sequence, and restoring records into new devices. The
// state itself is libs/virtio's, its encoding libs/migration's.
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "launcher/virtio_devices.h"
#include "migration/gpu_codec.h"
#include "migration/virtio_codec.h"
#include "virtio/net.h"

namespace kindling {
namespace {

namespace v1 = ::kindling::migration::v1;
constexpr uint32_t kVirtioRecordVersion = 1;

v1::VirtioKind KindOf(VirtioKind k) {
  switch (k) {
    case VirtioKind::kBlock: return v1::VIRTIO_KIND_BLOCK;
    case VirtioKind::kNet: return v1::VIRTIO_KIND_NET;
    case VirtioKind::kRng: return v1::VIRTIO_KIND_RNG;
    case VirtioKind::kConsole: return v1::VIRTIO_KIND_CONSOLE;
    case VirtioKind::kVsock: return v1::VIRTIO_KIND_VSOCK;
    case VirtioKind::kBalloon: return v1::VIRTIO_KIND_BALLOON;
    case VirtioKind::kGpu: return v1::VIRTIO_KIND_GPU;
  }
  return v1::VIRTIO_KIND_UNSPECIFIED;
}

std::string RecordName(const VirtioSlot& slot) {
  return absl::StrCat("virtio ", v1::VirtioKind_Name(KindOf(slot.kind)), " ", slot.index);
}

v1::VirtioBacking Backing(const VirtioSlot& slot, const VirtioConfig& config,
                          virtio::VirtioDevice& device) {
  v1::VirtioBacking b;
  if (slot.kind == VirtioKind::kBlock) {
    const DiskConfig& d = config.disks[slot.index];
    std::error_code ec;
    std::filesystem::path abs = std::filesystem::absolute(d.path, ec);
    b.set_path(ec ? d.path : abs.string());
    b.set_read_only(d.read_only);
    b.set_format(d.format);
  } else if (slot.kind == VirtioKind::kNet) {
    b.set_tap(config.nets[slot.index].tap);
    const auto& mac = static_cast<virtio::Net&>(device).mac();
    b.set_mac(std::string(mac.begin(), mac.end()));
  } else if (slot.kind == VirtioKind::kVsock) {
    b.set_vsock_cid(config.vsock->cid);
    b.set_vsock_uds_path(config.vsock->uds_path);
  } else if (slot.kind == VirtioKind::kBalloon) {
    b.set_deflate_on_oom(config.balloon->deflate_on_oom);
    b.set_stats_interval_s(config.balloon->stats_interval_s);
    b.set_free_page_reporting(config.balloon->free_page_reporting);
  } else if (slot.kind == VirtioKind::kGpu) {
    b.set_gpu_width(config.gpu->width);
    b.set_gpu_height(config.gpu->height);
    b.set_gpu_max_mib(config.gpu->max_mib);
  }
  return b;
}

absl::Status AddFromRecord(const v1::Virtio& r, VirtioConfig& c) {
  const v1::VirtioBacking& b = r.backing();
  switch (r.kind()) {
    case v1::VIRTIO_KIND_BLOCK:
      if (b.path().empty() || b.path().size() > 4096) {
        return absl::InvalidArgumentError("block device: the image path must be 1 to 4096 bytes");
      }
      c.disks.push_back({b.path(), b.read_only(), b.format()});
      return absl::OkStatus();
    case v1::VIRTIO_KIND_NET: {
      if (b.mac().size() != 6) {
        return absl::InvalidArgumentError("net device: the MAC address must be 6 bytes");
      }
      NetConfig n{b.tap(), std::array<uint8_t, 6>{}};
      std::copy(b.mac().begin(), b.mac().end(), n.mac->begin());
      c.nets.push_back(std::move(n));
      return absl::OkStatus();
    }
    case v1::VIRTIO_KIND_RNG: c.rng = true; return absl::OkStatus();
    case v1::VIRTIO_KIND_VSOCK:  // bounds: ValidateVirtio
      c.vsock = VsockConfig{b.vsock_cid(), b.vsock_uds_path(), false};
      return absl::OkStatus();
    case v1::VIRTIO_KIND_CONSOLE: c.console = true; return absl::OkStatus();
    case v1::VIRTIO_KIND_BALLOON:
      if (b.stats_interval_s() > 86400) {
        return absl::InvalidArgumentError("balloon: a statistics interval above one day");
      }
      c.balloon = BalloonConfig{0, b.deflate_on_oom(), b.stats_interval_s(),
                                b.free_page_reporting()};
      return absl::OkStatus();
    case v1::VIRTIO_KIND_GPU:  // bounds: ValidateVirtio
      c.gpu = GpuConfig{b.gpu_width(), b.gpu_height(), b.gpu_max_mib()};
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "a virtio device of kind ", v1::VirtioKind_Name(r.kind()), " cannot be restored"));
  }
}

}  // namespace

absl::StatusOr<VirtioConfig> VirtioConfigFromSnapshot(const v1::Snapshot& s) {
  VirtioConfig c;
  c.transport = s.virtio().pci() ? VirtioTransport::kPci : VirtioTransport::kMmio;
  c.packed = s.virtio().packed();
  std::vector<v1::VirtioKind> order;
  for (const v1::Device& d : s.devices()) {
    if (!d.has_virtio()) continue;
    if (d.version() != kVirtioRecordVersion) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device '", d.name(), "' state version ", d.version(),
          " is not supported (this build reads ", kVirtioRecordVersion, ")"));
    }
    absl::Status st = AddFromRecord(d.virtio(), c);
    if (!st.ok()) return absl::Status(st.code(), absl::StrCat(d.name(), ": ", st.message()));
    order.push_back(d.virtio().kind());
  }
  // PlanVirtio orders by kind; records in another order cannot be placed.
  VirtioPlan plan = PlanVirtio(c);
  for (size_t i = 0; i < order.size(); ++i) {
    if (KindOf(plan.slots[i].kind) != order[i]) {
      return absl::InvalidArgumentError(
          absl::StrCat("virtio device record ", i, " is out of kindling's slot order"));
    }
  }
  RETURN_IF_ERROR(ValidateVirtio(c));
  return c;
}

absl::Status VirtioDevices::CheckSnapshot() const {
  for (const auto& t : transports_) RETURN_IF_ERROR(t->device().CheckSnapshot());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::unique_ptr<virtio::LoopHold>>> VirtioDevices::Quiesce(
    absl::Duration timeout) {
  std::map<virtio::EventLoop*, std::vector<virtio::Transport*>> by_loop;
  for (const auto& t : transports_) by_loop[&t->loop()].push_back(t.get());
  std::vector<std::unique_ptr<virtio::LoopHold>> holds;
  for (auto& [loop, ts] : by_loop) {
    auto ready = [ts = ts] {
      bool all = true;
      for (virtio::Transport* t : ts) all = t->Quiesce() && all;
      return all;
    };
    ASSIGN_OR_RETURN(std::unique_ptr<virtio::LoopHold> h, loop->Hold(ready, timeout));
    holds.push_back(std::move(h));
  }
  return holds;
}

absl::StatusOr<std::vector<v1::Device>> VirtioDevices::SaveState(
    const VirtioPlan& plan, const VirtioConfig& config, bool with_state) const {
  std::vector<v1::Device> out;
  for (size_t i = 0; i < transports_.size(); ++i) {
    const VirtioSlot& slot = plan.slots[i];
    virtio::Transport& t = *transports_[i];
    v1::Device d;
    d.set_name(RecordName(slot));
    d.set_version(kVirtioRecordVersion);
    v1::Virtio* v = d.mutable_virtio();
    v->set_kind(KindOf(slot.kind));
    *v->mutable_backing() = Backing(slot, config, t.device());
    if (!with_state) {
      out.push_back(std::move(d));
      continue;
    }
    if (auto* m = dynamic_cast<virtio::MmioTransport*>(&t)) {
      *v->mutable_mmio() = ::migration::EncodeMmio(m->SaveMmioState());
    } else if (auto* p = dynamic_cast<virtio::PciTransport*>(&t)) {
      *v->mutable_pci() = ::migration::EncodePci(p->SavePciState());
    }
    if (slot.kind == VirtioKind::kBalloon) {
      *v->mutable_balloon() = ::migration::EncodeBalloon(balloon_->SaveState());
    } else if (slot.kind == VirtioKind::kGpu) {
      ASSIGN_OR_RETURN(*v->mutable_gpu(), ::migration::EncodeGpu(gpu_->SaveState()));
    }
    out.push_back(std::move(d));
  }
  return out;
}

absl::Status VirtioDevices::RestoreState(const VirtioPlan& plan,
                                         const std::vector<const v1::Device*>& records) {
  if (records.size() != transports_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        records.size(), " virtio device records for ", transports_.size(), " devices"));
  }
  for (size_t i = 0; i < transports_.size(); ++i) {
    const v1::Virtio& r = records[i]->virtio();
    if (r.kind() != KindOf(plan.slots[i].kind)) {
      return absl::InvalidArgumentError(absl::StrCat(
          records[i]->name(), ": a ", v1::VirtioKind_Name(r.kind()), " record for slot ", i,
          ", which holds ", v1::VirtioKind_Name(KindOf(plan.slots[i].kind))));
    }
    if (plan.slots[i].kind == VirtioKind::kBalloon) {
      balloon_->RestoreState(::migration::DecodeBalloon(r.balloon()));
    } else if (plan.slots[i].kind == VirtioKind::kGpu) {
      absl::Status st = RestoreGpu(r.gpu());
      if (!st.ok()) {
        return absl::Status(st.code(), absl::StrCat(records[i]->name(), ": ", st.message()));
      }
    }
    absl::Status st = RestoreTransport(*transports_[i], r);
    if (!st.ok()) {
      return absl::Status(st.code(), absl::StrCat(records[i]->name(), ": ", st.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status VirtioDevices::RestoreGpu(const v1::VirtioGpu& r) {
  ASSIGN_OR_RETURN(virtio::GpuState s,
                   ::migration::DecodeGpu(r, gpu_->limits().max_host_bytes));
  return gpu_->RestoreState(std::move(s));
}

absl::Status VirtioDevices::RestoreTransport(virtio::Transport& t, const v1::Virtio& r) {
  absl::Status st = absl::OkStatus();
  if (auto* m = dynamic_cast<virtio::MmioTransport*>(&t)) {
    if (!r.has_mmio()) return absl::InvalidArgumentError("no virtio-mmio state");
    ASSIGN_OR_RETURN(virtio::MmioState s, ::migration::DecodeMmio(r.mmio()));
    t.loop().RunSync([&] { st = m->RestoreMmioState(s); });
  } else if (auto* p = dynamic_cast<virtio::PciTransport*>(&t)) {
    if (!r.has_pci()) return absl::InvalidArgumentError("no virtio-pci state");
    ASSIGN_OR_RETURN(virtio::PciState s, ::migration::DecodePci(r.pci()));
    t.loop().RunSync([&] { st = p->RestorePciState(s); });
  }
  return st;
}

void VirtioDevices::KickAfterRestore() {
  for (const auto& t : transports_) t->loop().RunSync([&] { t->KickAfterRestore(); });
}

}  // namespace kindling
