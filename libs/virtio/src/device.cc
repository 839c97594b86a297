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
    const std::function<absl::StatusOr<uint32_t>(const DescriptorChain&)>& serve) {
  Queue& q = ctx.queues[index];
  bool used = false;
  for (uint32_t served = 0;; ++served) {
    if (served == q.size()) {
      ctx.process_again(index);
      break;
    }
    ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, q.Pop());
    if (!chain) break;
    ASSIGN_OR_RETURN(uint32_t written, serve(*chain));
    RETURN_IF_ERROR(q.PushUsed(chain->head, written));
    used = true;
  }
  if (used && q.NeedsInterrupt()) ctx.interrupt->SignalQueue(index);
  return absl::OkStatus();
}

}  // namespace virtio
