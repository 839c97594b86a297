#include "virtio/device.h"

#include "kindling/status_macros.h"

namespace virtio {

void CopyConfig(std::span<const uint8_t> config, uint64_t offset, std::span<uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t at = offset + i;
    data[i] = at < config.size() ? config[at] : 0;
  }
}

absl::Status ServeQueue(
    const ActivateContext& ctx, uint16_t index,
    const std::function<absl::StatusOr<uint32_t>(const DescriptorChain&)>& serve,
    const std::function<bool()>& ready) {
  Queue& q = ctx.queues[index];
  if (!q.active()) return absl::OkStatus();
  const uint16_t used_before = q.next_used();
  for (uint32_t served = 0;; ++served) {
    if (served == q.size()) {
      ctx.process_again(index);
      break;
    }
    if (ready && !ready()) break;
    ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, q.Pop());
    if (!chain) {
      ASSIGN_OR_RETURN(bool more, q.EnableNotification(true));
      if (more) continue;
      break;
    }
    ASSIGN_OR_RETURN(uint32_t written, serve(*chain));
    if (written != kKeepChain) RETURN_IF_ERROR(q.PushUsed(chain->head, written));
  }
  if (q.next_used() != used_before && q.NeedsInterrupt()) ctx.interrupt->SignalQueue(index);
  return absl::OkStatus();
}

}  // namespace virtio
