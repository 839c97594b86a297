// Reader for KVM's binary statistics (KVM_GET_STATS_FD, Linux 5.14+).
//
// The fd holds a header, name/descriptor tables and a data block. Descriptors
// are parsed once; Read() re-reads the data block with pread.
//
//   ASSIGN_OR_RETURN(UniqueFd fd, vcpu.GetStatsFd());
//   ASSIGN_OR_RETURN(auto stats, KvmStats::Create(std::move(fd)));
//   ASSIGN_OR_RETURN(auto values, stats->Read());
//   uint64_t exits = values["exits"];
#ifndef VCPU_STATS_H_
#define VCPU_STATS_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "vm-memory/unique_fd.h"

namespace vcpu {

class KvmStats {
 public:
  // Parses the header and descriptors behind `fd`.
  static absl::StatusOr<std::unique_ptr<KvmStats>> Create(
      vm_memory::UniqueFd fd);
  // Parses a stats blob held in memory (the same layout as the fd); for
  // tests and fuzzing. Read() then re-reads from that blob.
  static absl::StatusOr<std::unique_ptr<KvmStats>> FromBytes(
      std::span<const uint8_t> blob);

  // Current values; multi-element stats (histograms) are summed.
  absl::StatusOr<absl::flat_hash_map<std::string, uint64_t>> Read() const;
  std::vector<std::string> names() const;

 private:
  struct Desc {
    std::string name;
    uint32_t offset;  // bytes from the data block
    uint32_t size;    // number of u64 elements
  };
  KvmStats() = default;
  absl::Status Parse(std::span<const uint8_t> blob);

  vm_memory::UniqueFd fd_;
  std::vector<uint8_t> blob_;  // used when there is no fd
  uint64_t data_offset_ = 0;
  uint64_t data_size_ = 0;
  std::vector<Desc> descs_;
};

}  // namespace vcpu

#endif  // VCPU_STATS_H_
