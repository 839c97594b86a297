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
  std::vector<uint8_t> buf;
  return ServeQueue(ctx_, index, [&](const DescriptorChain& chain) -> absl::StatusOr<uint32_t> {
    uint64_t want = std::min<uint64_t>(chain.writable_bytes, kMaxRequest);
    buf.resize(want);
    size_t got = 0;
    while (got < want) {
      ssize_t n = ::getrandom(buf.data() + got, want - got, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::ErrnoToStatus(errno, "getrandom");
      got += n;
    }
    ChainWriter w(*ctx_.memory, chain);
    RETURN_IF_ERROR(w.Write(buf));
    bytes_served_ += want;
    return static_cast<uint32_t>(want);
  });
}

}  // namespace virtio
