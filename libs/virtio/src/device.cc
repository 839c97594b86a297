#include "virtio/device.h"

namespace virtio {

void CopyConfig(std::span<const uint8_t> config, uint64_t offset, std::span<uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t at = offset + i;
    data[i] = at < config.size() ? config[at] : 0;
  }
}

}  // namespace virtio
