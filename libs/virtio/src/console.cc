#include "virtio/console.h"

#include <vector>

#include "kindling/status_macros.h"

namespace virtio {
namespace {

struct ConsoleConfig {
  uint16_t cols;
  uint16_t rows;
  uint32_t max_nr_ports;
  uint32_t emerg_wr;
};

}  // namespace

Console::Console(EventLoop& loop, std::function<void(std::string_view)> output)
    : loop_(loop), output_(std::move(output)) {}

void Console::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  ConsoleConfig c = {80, 25, 1, 0};
  CopyConfig({reinterpret_cast<const uint8_t*>(&c), sizeof(c)}, offset, data);
}

absl::Status Console::Activate(const ActivateContext& ctx) {
  ctx_ = ctx;
  active_ = true;
  return Receive();  // input that arrived before the driver was ready
}

void Console::Reset() {
  ctx_ = {};
  active_ = false;
}

absl::Status Console::ProcessQueue(uint16_t index) {
  return index == kTransmitQueue ? Transmit() : Receive();
}

absl::Status Console::Transmit() {
  if (!active_ || !ctx_.queues[kTransmitQueue].active()) return absl::OkStatus();
  std::vector<uint8_t> buf;
  return ServeQueue(ctx_, kTransmitQueue,
                    [&](const DescriptorChain& chain) -> absl::StatusOr<uint32_t> {
                      ChainReader r(*ctx_.memory, chain);
                      buf.resize(std::min<uint64_t>(r.remaining(), kMaxWrite));
                      RETURN_IF_ERROR(r.Read(buf));
                      output_(std::string_view(reinterpret_cast<const char*>(buf.data()),
                                               buf.size()));
                      return 0u;
                    });
}

absl::Status Console::Receive() {
  if (!active_) return absl::OkStatus();  // queues are not there yet
  Queue& q = ctx_.queues[kReceiveQueue];
  if (!q.active()) return absl::OkStatus();
  bool used = false;
  for (uint32_t served = 0; served < q.size(); ++served) {
    {
      absl::MutexLock l(&mu_);
      if (input_.empty()) break;
    }
    ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, q.Pop());
    if (!chain) break;  // the guest will offer buffers and notify
    std::vector<uint8_t> chunk;
    {
      absl::MutexLock l(&mu_);
      size_t n = std::min<uint64_t>(input_.size(), chain->writable_bytes);
      chunk.assign(input_.begin(), input_.begin() + n);
      input_.erase(input_.begin(), input_.begin() + n);
    }
    ChainWriter w(*ctx_.memory, *chain);
    RETURN_IF_ERROR(w.Write(chunk));
    RETURN_IF_ERROR(q.PushUsed(chain->head, static_cast<uint32_t>(chunk.size())));
    used = true;
  }
  if (used && q.NeedsInterrupt()) ctx_.interrupt->SignalQueue(kReceiveQueue);
  return absl::OkStatus();
}

size_t Console::SendInput(std::string_view bytes) {
  size_t n;
  {
    absl::MutexLock l(&mu_);
    n = std::min(bytes.size(), kMaxPendingInput - input_.size());
    input_.insert(input_.end(), bytes.begin(), bytes.begin() + n);
  }
  loop_.Post([this] {
    // Errors here surface on the guest's next notification of this queue.
    (void)Receive();
  });
  return n;
}

}  // namespace virtio
