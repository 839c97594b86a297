#include "virtio/kvm/msi_router.h"

#include <cstdio>

#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"
#include "virtio/kvm/wiring.h"

namespace virtio {
namespace {

constexpr uint32_t kFirstMsiGsi = 24;  // after the IOAPIC's pins
constexpr uint32_t kIoapicPins = 24;

kvm_irq_routing_entry IrqchipRoute(uint32_t gsi, uint32_t chip, uint32_t pin) {
  kvm_irq_routing_entry e = {};
  e.gsi = gsi;
  e.type = KVM_IRQ_ROUTING_IRQCHIP;
  e.u.irqchip.irqchip = chip;
  e.u.irqchip.pin = pin;
  return e;
}

}  // namespace

MsiRouter::MsiRouter(vcpu::Vm& vm, vcpu::IrqchipMode mode) : vm_(vm), mode_(mode) {}

absl::StatusOr<int> MsiRouter::AddSource() {
  ASSIGN_OR_RETURN(vm_memory::UniqueFd fd, MakeEventFd());
  absl::MutexLock l(&mu_);
  Source s{kFirstMsiGsi + static_cast<uint32_t>(sources_.size()), std::move(fd)};
  // KVM wants a route for the GSI before the irqfd; this placeholder never
  // fires, since Send() routes the guest's message before writing the fd.
  sources_.push_back(std::move(s));
  RETURN_IF_ERROR(Commit());
  RETURN_IF_ERROR(vm_.AssignIrqfd(sources_.back().fd.get(), sources_.back().gsi));
  return static_cast<int>(sources_.size() - 1);
}

absl::Status MsiRouter::Commit() {
  std::vector<kvm_irq_routing_entry> table;
  if (mode_ == vcpu::IrqchipMode::kFull) {
    // KVM's default routing: GSIs 0-15 on both PICs and the IOAPIC, 16-23
    // on the IOAPIC.
    for (uint32_t gsi = 0; gsi < kIoapicPins; ++gsi) {
      if (gsi < 16) {
        table.push_back(IrqchipRoute(gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
                                     gsi % 8));
      }
      table.push_back(IrqchipRoute(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
  }
  for (const Source& s : sources_) {
    kvm_irq_routing_entry e = {};
    e.gsi = s.gsi;
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi.address_lo = static_cast<uint32_t>(s.address);
    e.u.msi.address_hi = static_cast<uint32_t>(s.address >> 32);
    e.u.msi.data = s.data;
    table.push_back(e);
  }
  ++updates_;
  return vm_.SetGsiRouting(table);
}

void MsiRouter::Send(int source, uint64_t address, uint32_t data) {
  int fd;
  {
    absl::MutexLock l(&mu_);
    if (source < 0 || static_cast<size_t>(source) >= sources_.size()) return;
    Source& s = sources_[source];
    if (!s.routed || s.address != address || s.data != data) {
      s.address = address;
      s.data = data;
      s.routed = true;
      absl::Status st = Commit();
      if (!st.ok()) {
        absl::FPrintF(stderr, "kindling: MSI route for GSI %d: %s\n", s.gsi, st.message());
        s.routed = false;
        return;
      }
    }
    fd = s.fd.get();
  }
  SignalEventFd(fd);
}

uint64_t MsiRouter::route_updates() const {
  absl::MutexLock l(&mu_);
  return updates_;
}

}  // namespace virtio
