#include "vcpu/stats.h"

#include <linux/kvm.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kvm_abi.h"

namespace vcpu {
namespace {

// A stats fd is a few KiB; cap what we read from it so a broken kernel or
// a hostile blob cannot make us allocate without bound.
constexpr size_t kMaxStatsBytes = 1 << 20;
constexpr uint32_t kMaxDescs = 4096;

absl::StatusOr<std::vector<uint8_t>> ReadAll(int fd) {
  std::vector<uint8_t> buf(kMaxStatsBytes);
  size_t total = 0;
  while (total < buf.size()) {
    ssize_t n = ::pread(fd, buf.data() + total, buf.size() - total, total);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "reading the KVM stats fd");
    }
    if (n == 0) break;
    total += n;
  }
  buf.resize(total);
  return buf;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvmStats>> KvmStats::Create(
    vm_memory::UniqueFd fd) {
  auto blob = ReadAll(fd.get());
  if (!blob.ok()) return blob.status();
  std::unique_ptr<KvmStats> stats(new KvmStats());
  absl::Status s = stats->Parse(*blob);
  if (!s.ok()) return s;
  stats->fd_ = std::move(fd);
  return stats;
}

absl::StatusOr<std::unique_ptr<KvmStats>> KvmStats::FromBytes(
    std::span<const uint8_t> blob) {
  if (blob.size() > kMaxStatsBytes) {
    return absl::InvalidArgumentError("KVM stats blob is larger than 1 MiB");
  }
  std::unique_ptr<KvmStats> stats(new KvmStats());
  absl::Status s = stats->Parse(blob);
  if (!s.ok()) return s;
  stats->blob_.assign(blob.begin(), blob.end());
  return stats;
}

absl::Status KvmStats::Parse(std::span<const uint8_t> blob) {
  kvm_stats_header h;
  if (blob.size() < sizeof(h)) {
    return absl::InvalidArgumentError("KVM stats: shorter than its header");
  }
  std::memcpy(&h, blob.data(), sizeof(h));
  if (h.num_desc > kMaxDescs) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVM stats: num_desc ", h.num_desc, " is absurd"));
  }
  if (h.name_size == 0 || h.name_size > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVM stats: name_size ", h.name_size, " is absurd"));
  }
  const uint64_t desc_size = sizeof(abi::StatsDesc) + h.name_size;
  if (uint64_t{h.desc_offset} + desc_size * h.num_desc > blob.size()) {
    return absl::InvalidArgumentError(
        "KVM stats: descriptor table runs past the end");
  }
  if (h.data_offset > blob.size()) {
    return absl::InvalidArgumentError("KVM stats: data_offset past the end");
  }
  data_offset_ = h.data_offset;
  data_size_ = blob.size() - h.data_offset;
  descs_.clear();
  for (uint32_t i = 0; i < h.num_desc; ++i) {
    const uint8_t* p = blob.data() + h.desc_offset + i * desc_size;
    abi::StatsDesc d;
    std::memcpy(&d, p, sizeof(d));
    const char* name = reinterpret_cast<const char*>(p + sizeof(d));
    std::string n(name, strnlen(name, h.name_size));
    if (uint64_t{d.offset} + uint64_t{d.size} * 8 > data_size_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KVM stats: data of '", n, "' runs past the end"));
    }
    descs_.push_back({std::move(n), d.offset, d.size});
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::flat_hash_map<std::string, uint64_t>> KvmStats::Read()
    const {
  std::vector<uint8_t> data(data_size_);
  if (fd_.valid()) {
    ssize_t n = ::pread(fd_.get(), data.data(), data.size(), data_offset_);
    if (n < 0) return absl::ErrnoToStatus(errno, "reading KVM stats data");
    data.resize(n);
  } else {
    std::memcpy(data.data(), blob_.data() + data_offset_, data_size_);
  }
  absl::flat_hash_map<std::string, uint64_t> values;
  for (const Desc& d : descs_) {
    uint64_t sum = 0;
    for (uint32_t i = 0; i < d.size; ++i) {
      uint64_t off = d.offset + uint64_t{i} * 8;
      if (off + 8 > data.size()) break;
      uint64_t v;
      std::memcpy(&v, data.data() + off, 8);
      sum += v;
    }
    values[d.name] = sum;
  }
  return values;
}

std::vector<std::string> KvmStats::names() const {
  std::vector<std::string> out;
  for (const Desc& d : descs_) out.push_back(d.name);
  return out;
}

}  // namespace vcpu
