// PciTransport::SavePciState / RestorePciState. The saved configuration
// space is applied through the write mask, so a snapshot can set only what
// a guest could have written (BAR address, command, MSI-X control, the
// pci_cfg window), never the IDs, the capabilities or the BAR's size.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "virtio/pci.h"

namespace virtio {

PciState PciTransport::SavePciState() {
  PciState s;
  s.transport = SaveState();
  {
    absl::MutexLock l(&cfg_mu_);
    s.config.assign(cfg_.begin(), cfg_.end());
  }
  {
    absl::MutexLock m(&msix_mu_);
    for (const MsixEntry& e : msix_) s.msix.push_back({e.address, e.data, e.masked, e.pending});
    s.queue_vectors = queue_vector_;
    s.config_vector = config_vector_;
  }
  s.isr = isr_.load();
  s.device_features_sel = device_features_sel_.load();
  s.driver_features_sel = driver_features_sel_.load();
  s.queue_sel = queue_sel_.load();
  return s;
}

absl::Status PciTransport::RestoreMsix(const PciState& state) {
  absl::MutexLock m(&msix_mu_);
  if (state.msix.size() != msix_.size() || state.queue_vectors.size() != queue_vector_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MSI-X: ", state.msix.size(), " entries and ", state.queue_vectors.size(),
        " queue vectors saved, the function has ", msix_.size(), " and ",
        queue_vector_.size()));
  }
  auto valid = [&](uint16_t v) { return v == kMsixNoVector || v < msix_.size(); };
  if (!valid(state.config_vector)) {
    return absl::InvalidArgumentError(
        absl::StrCat("MSI-X config vector ", state.config_vector, " is not in the table"));
  }
  for (size_t i = 0; i < state.queue_vectors.size(); ++i) {
    if (!valid(state.queue_vectors[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MSI-X vector ", state.queue_vectors[i], " of queue ", i, " is not in the table"));
    }
  }
  for (size_t i = 0; i < msix_.size(); ++i) {
    const PciMsixEntryState& e = state.msix[i];
    msix_[i] = {e.address, e.data, e.masked, e.pending};
  }
  queue_vector_ = state.queue_vectors;
  config_vector_ = state.config_vector;
  return absl::OkStatus();
}

absl::Status PciTransport::RestorePciState(const PciState& state) {
  if (state.config.size() != cfg_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PCI configuration space of ", state.config.size(), " bytes, not ", cfg_.size()));
  }
  if (state.isr > 3) {
    return absl::InvalidArgumentError(absl::StrCat("ISR ", state.isr, " has bits beyond 0-1"));
  }
  RETURN_IF_ERROR(RestoreMsix(state));
  RETURN_IF_ERROR(RestoreState(state.transport));
  isr_.store(state.isr);
  device_features_sel_.store(state.device_features_sel);
  driver_features_sel_.store(state.driver_features_sel);
  queue_sel_.store(state.queue_sel);
  absl::MutexLock l(&cfg_mu_);
  for (size_t i = 0; i < cfg_.size(); ++i) {
    cfg_[i] = (cfg_[i] & ~wmask_[i]) | (state.config[i] & wmask_[i]);
  }
  uint16_t ctl;
  std::memcpy(&ctl, &cfg_[kPciMsixCapOffset + 2], sizeof(ctl));
  {
    absl::MutexLock m(&msix_mu_);
    msix_enabled_ = ctl & 0x8000;
    msix_function_mask_ = ctl & 0x4000;
  }
  UpdateBarMapping();
  return absl::OkStatus();
}

}  // namespace virtio
