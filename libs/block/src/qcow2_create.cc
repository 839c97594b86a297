// qcow2 image creation: header, refcount table and blocks, empty L1.
#include <cstring>

#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"
#include "libs/block/src/endian.h"
#include "libs/block/src/qcow2_image.h"

namespace block {

absl::Status Qcow2Image::Create(const std::string& path,
                                const Qcow2CreateOptions& o) {
  using namespace qcow2;
  const uint64_t cs = o.cluster_size;
  if (cs < (1u << kMinClusterBits) || cs > (1u << kMaxClusterBits) ||
      (cs & (cs - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cluster size %u must be a power of two from 512 to 2 MiB", cs));
  }
  uint32_t order = 0;
  while (order <= 6 && (1u << order) != o.refcount_bits) ++order;
  if (order > 6) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "refcount bits %u must be a power of two up to 64", o.refcount_bits));
  }
  if (o.size > kMaxDiskSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("size %u is above the qcow2 limit %u", o.size, kMaxDiskSize));
  }
  const uint32_t cb = __builtin_ctzll(cs);
  const uint64_t l1_entries = L1EntriesFor(o.size, cb);
  if (l1_entries * 8 > kMaxL1Bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "size %u needs an L1 table above 32 MiB; use larger clusters", o.size));
  }
  const uint64_t l1_clusters = std::max<uint64_t>(1, (l1_entries * 8 + cs - 1) / cs);
  const uint64_t rb_entries = cs * 8 / (1u << order);
  // Layout: header | refcount table (r) | L1 (l1_clusters) | blocks (k).
  uint64_t r = 1, k = 1;
  for (;;) {
    uint64_t total = 1 + r + l1_clusters + k;
    uint64_t need_k = (total + rb_entries - 1) / rb_entries;
    uint64_t need_r = (need_k * 8 + cs - 1) / cs;
    if (need_k <= k && need_r <= r) break;
    k = std::max(k, need_k);
    r = std::max(r, need_r);
  }
  if (r * cs > kMaxReftableBytes) {
    return absl::InvalidArgumentError("refcount table would exceed 8 MiB");
  }
  const uint64_t total = 1 + r + l1_clusters + k;
  Header h;
  h.version = 3;
  h.cluster_bits = cb;
  h.size = o.size;
  h.l1_size = l1_entries;
  h.refcount_table_offset = cs;
  h.refcount_table_clusters = r;
  h.l1_table_offset = (1 + r) * cs;
  h.refcount_order = order;
  h.backing_file = o.backing_file;
  h.backing_format = o.backing_format;
  if (o.zstd) {
    h.compression_type = CompressionType::kZstd;
    h.incompatible_features |= kIncompatCompression;
  }
  ASSIGN_OR_RETURN(std::vector<uint8_t> c0, SerializeHeader(h));
  ASSIGN_OR_RETURN(File f, File::Open(path, {.create = true}));
  RETURN_IF_ERROR(f.Truncate(total * cs));
  const uint64_t rb_first = 1 + r + l1_clusters;
  std::vector<uint8_t> table(r * cs, 0);
  for (uint64_t i = 0; i < k; ++i) {
    internal::StoreBe64(&table[i * 8], (rb_first + i) * cs);
  }
  RETURN_IF_ERROR(f.PWrite(table.data(), table.size(), cs));
  // Refcount 1 for every cluster of the layout, written through a scratch
  // block per refcount block.
  for (uint64_t i = 0; i < k; ++i) {
    std::vector<uint8_t> b(cs, 0);
    for (uint64_t c = i * rb_entries; c < std::min(total, (i + 1) * rb_entries); ++c) {
      uint64_t e = c - i * rb_entries;
      switch (order) {
        case 3: b[e] = 1; break;
        case 4: internal::StoreBe16(&b[2 * e], 1); break;
        case 5: internal::StoreBe32(&b[4 * e], 1); break;
        case 6: internal::StoreBe64(&b[8 * e], 1); break;
        default: {
          uint32_t bits = 1u << order, per = 8 / bits;
          b[e / per] |= 1u << ((e % per) * bits);
        }
      }
    }
    RETURN_IF_ERROR(f.PWrite(b.data(), cs, (rb_first + i) * cs));
  }
  RETURN_IF_ERROR(f.DataSync());
  RETURN_IF_ERROR(f.PWrite(c0.data(), c0.size(), 0));  // header last
  return f.DataSync();
}

}  // namespace block
