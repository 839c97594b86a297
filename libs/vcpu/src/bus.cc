#include "vcpu/bus.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace vcpu {

absl::Status Bus::Insert(std::shared_ptr<BusDevice> device, uint64_t base,
                         uint64_t len, std::string name) {
  if (len == 0 || base + len < base) {
    return absl::InvalidArgumentError(
        absl::StrFormat("bus range 0x%x+0x%x for %s is empty or wraps", base,
                        len, name));
  }
  absl::MutexLock lock(&mu_);
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < base + len) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "bus range 0x%x+0x%x for %s overlaps %s at 0x%x", base, len, name,
        next->second.name, next->first));
  }
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.len > base) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "bus range 0x%x+0x%x for %s overlaps %s at 0x%x", base, len, name,
          prev->second.name, prev->first));
    }
  }
  ranges_.emplace(base, Range{len, std::move(device), std::move(name)});
  return absl::OkStatus();
}

bool Bus::Remove(uint64_t base) {
  absl::MutexLock lock(&mu_);
  return ranges_.erase(base) > 0;
}

void Bus::Clear() {
  std::map<uint64_t, Range> old;
  {
    absl::MutexLock lock(&mu_);
    old.swap(ranges_);
  }
}

const Bus::Range* Bus::Find(uint64_t addr, uint64_t len, uint64_t* base) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return nullptr;
  --it;
  uint64_t off = addr - it->first;
  if (off >= it->second.len || len > it->second.len - off) return nullptr;
  *base = it->first;
  return &it->second;
}

bool Bus::Read(uint64_t addr, std::span<uint8_t> data) const {
  std::shared_ptr<BusDevice> dev;
  uint64_t base = 0;
  {
    absl::ReaderMutexLock lock(&mu_);
    const Range* r = Find(addr, data.size(), &base);
    if (r != nullptr) dev = r->device;
  }
  if (!dev) {
    std::memset(data.data(), 0xff, data.size());
    return false;
  }
  dev->Read(addr - base, data);
  return true;
}

bool Bus::Write(uint64_t addr, std::span<const uint8_t> data) const {
  std::shared_ptr<BusDevice> dev;
  uint64_t base = 0;
  {
    absl::ReaderMutexLock lock(&mu_);
    const Range* r = Find(addr, data.size(), &base);
    if (r != nullptr) dev = r->device;
  }
  if (!dev) return false;
  dev->Write(addr - base, data);
  return true;
}

}  // namespace vcpu
