#include "vcpu/stats.h"

#include <linux/kvm.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

using namespace vcpu;

namespace {

// A stats blob in KVM's layout: header, id, descriptors, data.
std::vector<uint8_t> MakeBlob(const std::vector<std::pair<std::string, uint64_t>>& stats,
                              uint32_t name_size = 48) {
  kvm_stats_header h = {};
  h.name_size = name_size;
  h.num_desc = stats.size();
  h.id_offset = sizeof(h);
  h.desc_offset = h.id_offset + name_size;
  uint32_t desc_size = 16 + name_size;  // C layout of kvm_stats_desc
  h.data_offset = h.desc_offset + desc_size * stats.size();
  std::vector<uint8_t> blob(h.data_offset + 8 * stats.size());
  std::memcpy(blob.data(), &h, sizeof(h));
  for (size_t i = 0; i < stats.size(); ++i) {
    // flags u32, exponent s16, size u16, offset u32, bucket_size u32, name
    uint8_t* p = blob.data() + h.desc_offset + i * desc_size;
    uint16_t size = 1;
    uint32_t offset = 8 * i;
    std::memcpy(p + 6, &size, 2);
    std::memcpy(p + 8, &offset, 4);
    std::memcpy(p + 16, stats[i].first.c_str(), stats[i].first.size());
    std::memcpy(blob.data() + h.data_offset + 8 * i, &stats[i].second, 8);
  }
  return blob;
}

}  // namespace

TEST_CASE("KvmStats reads named counters") {
  auto blob = MakeBlob({{"exits", 1234}, {"irq_injections", 56}, {"halt_exits", 7}});
  auto stats = KvmStats::FromBytes(blob);
  REQUIRE(stats.ok());
  auto values = (*stats)->Read();
  REQUIRE(values.ok());
  REQUIRE((*values)["exits"] == 1234);
  REQUIRE((*values)["irq_injections"] == 56);
  REQUIRE((*stats)->names().size() == 3);
}

TEST_CASE("KvmStats rejects blobs whose tables point outside") {
  auto blob = MakeBlob({{"exits", 1}});
  kvm_stats_header h;
  std::memcpy(&h, blob.data(), sizeof(h));
  SECTION("descriptor table past the end") {
    h.num_desc = 1000;
    std::memcpy(blob.data(), &h, sizeof(h));
    REQUIRE_FALSE(KvmStats::FromBytes(blob).ok());
  }
  SECTION("data past the end") {
    h.data_offset = blob.size() - 4;
    std::memcpy(blob.data(), &h, sizeof(h));
    REQUIRE_FALSE(KvmStats::FromBytes(blob).ok());
  }
  SECTION("truncated header") {
    blob.resize(8);
    REQUIRE_FALSE(KvmStats::FromBytes(blob).ok());
  }
}
