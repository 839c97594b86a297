#include "virtio/rng.h"

#include <sys/random.h>

#include <cerrno>
#include <vector>

#include "kindling/status_macros.h"

namespace virtio {

absl::Status Rng::Activate(const ActivateContext& ctx) {
  ctx_ = ctx;
  return absl::OkStatus();
}

absl::Status Rng::ProcessQueue(uint16_t index) {
  Queue& q = ctx_.queues[index];
  bool used = false;
  std::vector<uint8_t> buf;
  for (uint32_t served = 0;; ++served) {
    if (served == q.size()) {
      ctx_.process_again(index);
      break;
    }
    ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, q.Pop());
    if (!chain) break;
    uint64_t want = std::min<uint64_t>(chain->writable_bytes, kMaxRequest);
    buf.resize(want);
    size_t got = 0;
    while (got < want) {
      ssize_t n = ::getrandom(buf.data() + got, want - got, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::ErrnoToStatus(errno, "getrandom");
      got += n;
    }
    ChainWriter w(*ctx_.memory, *chain);
    RETURN_IF_ERROR(w.Write(buf));
    RETURN_IF_ERROR(q.PushUsed(chain->head, static_cast<uint32_t>(want)));
    bytes_served_ += want;
    used = true;
  }
  if (used && q.NeedsInterrupt()) ctx_.interrupt->SignalQueue(index);
  return absl::OkStatus();
}

}  // namespace virtio
