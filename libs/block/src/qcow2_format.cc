#include "libs/block/src/qcow2_format.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "libs/block/src/endian.h"

namespace block::qcow2 {

using internal::LoadBe16;
using internal::LoadBe32;
using internal::LoadBe64;
using internal::StoreBe16;
using internal::StoreBe32;
using internal::StoreBe64;

namespace {

absl::Status Bad(const std::string& name, const char* field, uint64_t offset,
                 const std::string& why) {
  return absl::DataLossError(absl::StrFormat(
      "%s: qcow2 header field %s (offset %u): %s", name, field, offset, why));
}

// [off, off + len) must be cluster aligned and inside the file.
absl::Status CheckTable(const std::string& name, const char* field,
                        uint64_t field_off, uint64_t off, uint64_t len,
                        uint64_t cluster_size, uint64_t file_size) {
  if (off % cluster_size != 0) {
    return Bad(name, field, field_off,
               absl::StrFormat("0x%x is not aligned to the %u-byte cluster",
                               off, cluster_size));
  }
  if (off > file_size || len > file_size - off) {
    return Bad(name, field, field_off,
               absl::StrFormat("table [0x%x, +0x%x) runs past the end of the "
                               "file (0x%x bytes)",
                               off, len, file_size));
  }
  if (off == 0 && len > 0) {
    return Bad(name, field, field_off, "table overlaps the header (offset 0)");
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t L1EntriesFor(uint64_t size, uint32_t cluster_bits) {
  const uint32_t shift = cluster_bits + (cluster_bits - 3);  // bytes per L2
  return (size + (1ULL << shift) - 1) >> shift;
}

absl::StatusOr<Header> ParseHeader(std::span<const uint8_t> c0,
                                   uint64_t file_size,
                                   const std::string& name) {
  if (c0.size() < kV2HeaderLength) {
    return absl::DataLossError(absl::StrFormat(
        "%s: truncated qcow2 header: %u bytes, need at least %u", name,
        c0.size(), kV2HeaderLength));
  }
  const uint8_t* p = c0.data();
  if (LoadBe32(p) != kMagic) {
    return Bad(name, "magic", 0, "not a qcow2 image (no QFI\\xfb)");
  }
  Header h;
  h.version = LoadBe32(p + 4);
  if (h.version != 2 && h.version != 3) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: qcow2 header field version (offset 4): version %u is not "
        "supported (2 and 3 are)",
        name, h.version));
  }
  h.backing_file_offset = LoadBe64(p + 8);
  h.backing_file_size = LoadBe32(p + 16);
  h.cluster_bits = LoadBe32(p + 20);
  h.size = LoadBe64(p + 24);
  h.crypt_method = LoadBe32(p + 32);
  h.l1_size = LoadBe32(p + 36);
  h.l1_table_offset = LoadBe64(p + 40);
  h.refcount_table_offset = LoadBe64(p + 48);
  h.refcount_table_clusters = LoadBe32(p + 56);
  h.nb_snapshots = LoadBe32(p + 60);
  h.snapshots_offset = LoadBe64(p + 64);

  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
    return Bad(name, "cluster_bits", 20,
               absl::StrFormat("%u is outside %u..%u (512 B to 2 MiB clusters)",
                               h.cluster_bits, kMinClusterBits, kMaxClusterBits));
  }
  const uint64_t cs = h.cluster_size();
  if (h.version == 3) {
    if (c0.size() < kV3MinHeaderLength) {
      return absl::DataLossError(absl::StrFormat(
          "%s: truncated qcow2 v3 header: %u bytes, need %u", name, c0.size(),
          kV3MinHeaderLength));
    }
    h.incompatible_features = LoadBe64(p + 72);
    h.compatible_features = LoadBe64(p + 80);
    h.autoclear_features = LoadBe64(p + 88);
    h.refcount_order = LoadBe32(p + 96);
    h.header_length = LoadBe32(p + 100);
    if (h.header_length < kV3MinHeaderLength || h.header_length > cs ||
        h.header_length % 8 != 0) {
      return Bad(name, "header_length", 100,
                 absl::StrFormat("%u must be a multiple of 8 in [%u, %u]",
                                 h.header_length, kV3MinHeaderLength, cs));
    }
    if (h.header_length > c0.size()) {
      return absl::DataLossError(absl::StrFormat(
          "%s: truncated qcow2 header: header_length %u but the file has %u "
          "bytes",
          name, h.header_length, c0.size()));
    }
    if (h.header_length > 104) {
      uint8_t ct = p[104];
      if (ct > 1) {
        return absl::UnimplementedError(absl::StrFormat(
            "%s: qcow2 header field compression_type (offset 104): unknown "
            "type %u",
            name, ct));
      }
      h.compression_type = static_cast<CompressionType>(ct);
    }
    bool bit = h.incompatible_features & kIncompatCompression;
    if (bit != (h.compression_type != CompressionType::kZlib)) {
      return Bad(name, "incompatible_features", 72,
                 "compression-type bit 3 disagrees with compression_type");
    }
  } else {
    h.header_length = kV2HeaderLength;
    h.refcount_order = 4;
  }
  if (h.refcount_order > 6) {
    return Bad(name, "refcount_order", 96,
               absl::StrFormat("%u is above 6 (64-bit refcounts)",
                               h.refcount_order));
  }
  const uint64_t known = kIncompatDirty | kIncompatCorrupt | kIncompatDataFile |
                         kIncompatCompression | kIncompatExtendedL2;
  if (h.incompatible_features & ~known) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: qcow2 header field incompatible_features (offset 72): unknown "
        "feature bits 0x%x",
        name, h.incompatible_features & ~known));
  }
  if (h.incompatible_features & kIncompatExtendedL2) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: extended L2 entries (subclusters) are not supported", name));
  }
  if (h.incompatible_features & kIncompatDataFile) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: external data files are not supported", name));
  }
  if (h.crypt_method != 0) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: qcow2 header field crypt_method (offset 32): encrypted images "
        "(method %u) are not supported",
        name, h.crypt_method));
  }
  if (h.size > kMaxDiskSize) {
    return Bad(name, "size", 24,
               absl::StrFormat("%u bytes is above the %u-byte limit", h.size,
                               kMaxDiskSize));
  }
  const uint64_t l1_needed = L1EntriesFor(h.size, h.cluster_bits);
  if (uint64_t(h.l1_size) * 8 > kMaxL1Bytes) {
    return Bad(name, "l1_size", 36,
               absl::StrFormat("%u entries exceed the %u-byte L1 limit",
                               h.l1_size, kMaxL1Bytes));
  }
  if (h.l1_size < l1_needed) {
    return Bad(name, "l1_size", 36,
               absl::StrFormat("%u entries cannot map %u bytes (need %u)",
                               h.l1_size, h.size, l1_needed));
  }
  if (auto s = CheckTable(name, "l1_table_offset", 40, h.l1_table_offset,
                          uint64_t(h.l1_size) * 8, cs, file_size);
      !s.ok()) {
    return s;
  }
  if (h.refcount_table_clusters == 0 ||
      uint64_t(h.refcount_table_clusters) * cs > kMaxReftableBytes) {
    return Bad(name, "refcount_table_clusters", 56,
               absl::StrFormat("%u clusters is outside 1..%u bytes",
                               h.refcount_table_clusters, kMaxReftableBytes));
  }
  if (auto s = CheckTable(name, "refcount_table_offset", 48,
                          h.refcount_table_offset,
                          uint64_t(h.refcount_table_clusters) * cs, cs,
                          file_size);
      !s.ok()) {
    return s;
  }
  if (h.nb_snapshots > kMaxSnapshots) {
    return Bad(name, "nb_snapshots", 60,
               absl::StrFormat("%u is above %u", h.nb_snapshots, kMaxSnapshots));
  }
  if (h.nb_snapshots > 0) {
    if (auto s = CheckTable(name, "snapshots_offset", 64, h.snapshots_offset,
                            uint64_t(h.nb_snapshots) * 40, cs, file_size);
        !s.ok()) {
      return s;
    }
  }

  // Header extensions: from header_length to the end of cluster 0 or the
  // backing file name, whichever comes first.
  uint64_t end = std::min<uint64_t>(c0.size(), cs);
  if (h.backing_file_offset != 0) {
    if (h.backing_file_size > kMaxBackingNameLength) {
      return Bad(name, "backing_file_size", 16,
                 absl::StrFormat("%u is above %u", h.backing_file_size,
                                 kMaxBackingNameLength));
    }
    if (h.backing_file_offset > end ||
        h.backing_file_size > end - h.backing_file_offset) {
      return Bad(name, "backing_file_offset", 8,
                 absl::StrFormat("name [0x%x, +%u) is not inside the first "
                                 "cluster",
                                 h.backing_file_offset, h.backing_file_size));
    }
    if (h.backing_file_offset < h.header_length) {
      return Bad(name, "backing_file_offset", 8,
                 absl::StrFormat("0x%x overlaps the header",
                                 h.backing_file_offset));
    }
    h.backing_file.assign(
        reinterpret_cast<const char*>(p + h.backing_file_offset),
        h.backing_file_size);
    if (h.backing_file.empty() ||
        h.backing_file.find('\0') != std::string::npos) {
      return Bad(name, "backing_file_size", 16, "empty or NUL in backing name");
    }
    end = h.backing_file_offset;
  }
  uint64_t off = h.header_length;
  for (int n = 0; off + 8 <= end; ++n) {  // each step advances >= 8 bytes
    uint32_t type = LoadBe32(p + off);
    uint32_t len = LoadBe32(p + off + 4);
    if (type == kExtEnd) break;
    if (len > end - off - 8) {
      return absl::DataLossError(absl::StrFormat(
          "%s: qcow2 header extension 0x%08x at offset %u: length %u runs "
          "past the first cluster",
          name, type, off, len));
    }
    const uint8_t* d = p + off + 8;
    switch (type) {
      case kExtBackingFormat:
        h.backing_format.assign(reinterpret_cast<const char*>(d), len);
        if (h.backing_format.size() > 16 ||
            h.backing_format.find('\0') != std::string::npos) {
          return absl::DataLossError(absl::StrFormat(
              "%s: qcow2 backing format extension at offset %u: bad name",
              name, off));
        }
        break;
      case kExtDataFile:
        h.has_data_file = true;
        break;
      case kExtCrypto:
        return absl::UnimplementedError(
            absl::StrFormat("%s: encrypted images are not supported", name));
      default:
        break;  // feature names, bitmaps, unknown: skipped
    }
    off += 8 + ((uint64_t(len) + 7) & ~7ULL);
  }
  return h;
}

absl::StatusOr<std::vector<uint8_t>> SerializeHeader(Header h) {
  const uint64_t cs = h.cluster_size();
  std::vector<uint8_t> b(cs, 0);
  uint8_t* p = b.data();
  const uint32_t hl = h.version == 3 ? kV3HeaderLength : kV2HeaderLength;
  uint64_t off = hl;
  auto ext = [&](uint32_t type, const void* data, uint32_t len) -> bool {
    uint64_t need = 8 + ((uint64_t(len) + 7) & ~7ULL);
    if (off + need > cs) return false;
    StoreBe32(p + off, type);
    StoreBe32(p + off + 4, len);
    memcpy(p + off + 8, data, len);
    off += need;
    return true;
  };
  bool fits = true;
  if (h.version == 3) {
    if (!h.backing_format.empty()) {
      fits &= ext(kExtBackingFormat, h.backing_format.data(),
                  h.backing_format.size());
    }
    // Feature name table: type (0 incompat, 1 compat), bit, 46-byte name.
    struct Feature {
      uint8_t type, bit;
      const char* name;
    } features[] = {{0, 0, "dirty bit"},        {0, 1, "corrupt bit"},
                    {0, 2, "external data file"}, {0, 3, "compression type"},
                    {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"}};
    std::vector<uint8_t> table(sizeof features / sizeof features[0] * 48, 0);
    for (size_t i = 0; i < sizeof features / sizeof features[0]; ++i) {
      table[i * 48] = features[i].type;
      table[i * 48 + 1] = features[i].bit;
      strncpy(reinterpret_cast<char*>(&table[i * 48 + 2]), features[i].name, 46);
    }
    if (off + 8 + table.size() + 8 + h.backing_file.size() <= cs) {
      ext(kExtFeatureTable, table.data(), table.size());  // optional
    }
    fits &= off + 8 <= cs;
    off += 8;  // end marker (zeros)
  }
  if (!h.backing_file.empty()) {
    if (h.backing_file.size() > kMaxBackingNameLength ||
        off + h.backing_file.size() > cs) {
      fits = false;
    } else {
      h.backing_file_offset = off;
      h.backing_file_size = h.backing_file.size();
      memcpy(p + off, h.backing_file.data(), h.backing_file.size());
    }
  } else {
    h.backing_file_offset = 0;
    h.backing_file_size = 0;
  }
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "qcow2 header, extensions and backing file name do not fit in one "
        "%u-byte cluster",
        cs));
  }
  StoreBe32(p, kMagic);
  StoreBe32(p + 4, h.version);
  StoreBe64(p + 8, h.backing_file_offset);
  StoreBe32(p + 16, h.backing_file_size);
  StoreBe32(p + 20, h.cluster_bits);
  StoreBe64(p + 24, h.size);
  StoreBe32(p + 32, 0);
  StoreBe32(p + 36, h.l1_size);
  StoreBe64(p + 40, h.l1_table_offset);
  StoreBe64(p + 48, h.refcount_table_offset);
  StoreBe32(p + 56, h.refcount_table_clusters);
  StoreBe32(p + 60, h.nb_snapshots);
  StoreBe64(p + 64, h.snapshots_offset);
  if (h.version == 3) {
    StoreBe64(p + 72, h.incompatible_features);
    StoreBe64(p + 80, h.compatible_features);
    StoreBe64(p + 88, h.autoclear_features);
    StoreBe32(p + 96, h.refcount_order);
    StoreBe32(p + 100, hl);
    p[104] = static_cast<uint8_t>(h.compression_type);
  }
  return b;
}

absl::StatusOr<std::vector<Snapshot>> ParseSnapshotTable(
    std::span<const uint8_t> t, uint32_t count, uint32_t cluster_bits,
    uint64_t file_size, const std::string& name, uint64_t table_offset) {
  std::vector<Snapshot> out;
  uint64_t off = 0;
  const uint64_t cs = 1ULL << cluster_bits;
  for (uint32_t i = 0; i < count; ++i) {
    auto bad = [&](const std::string& why) {
      return absl::DataLossError(absl::StrFormat(
          "%s: qcow2 snapshot %u (file offset 0x%x): %s", name, i,
          table_offset + off, why));
    };
    if (t.size() < 40 || off > t.size() - 40) return bad("table is truncated");
    const uint8_t* p = t.data() + off;
    Snapshot s;
    s.l1_table_offset = LoadBe64(p);
    s.l1_size = LoadBe32(p + 8);
    uint16_t id_len = LoadBe16(p + 12);
    uint16_t name_len = LoadBe16(p + 14);
    s.date_sec = LoadBe32(p + 16);
    s.date_nsec = LoadBe32(p + 20);
    s.vm_clock_nsec = LoadBe64(p + 24);
    s.vm_state_size = LoadBe32(p + 32);
    uint32_t extra_len = LoadBe32(p + 36);
    if (extra_len > 1024) return bad("extra_data_size above 1024");
    uint64_t need = 40ULL + extra_len + id_len + name_len;
    if (need > t.size() - off) return bad("entry runs past the table");
    s.extra.assign(p + 40, p + 40 + extra_len);
    if (extra_len >= 8) s.vm_state_size = LoadBe64(p + 40);
    if (extra_len >= 16) s.disk_size = LoadBe64(p + 48);
    s.id.assign(reinterpret_cast<const char*>(p + 40 + extra_len), id_len);
    s.name.assign(reinterpret_cast<const char*>(p + 40 + extra_len + id_len),
                  name_len);
    if (uint64_t(s.l1_size) * 8 > kMaxL1Bytes) return bad("l1_size too large");
    if (s.l1_table_offset % cs != 0 || s.l1_table_offset > file_size ||
        uint64_t(s.l1_size) * 8 > file_size - s.l1_table_offset) {
      return bad(absl::StrFormat("L1 table at 0x%x (%u entries) is unaligned "
                                 "or past the end of the file",
                                 s.l1_table_offset, s.l1_size));
    }
    off += (need + 7) & ~7ULL;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<uint8_t> SerializeSnapshotTable(const std::vector<Snapshot>& snaps) {
  std::vector<uint8_t> out;
  for (const Snapshot& s : snaps) {
    std::vector<uint8_t> extra = s.extra;
    if (extra.size() < 16) extra.resize(16, 0);
    StoreBe64(extra.data(), s.vm_state_size);
    StoreBe64(extra.data() + 8, s.disk_size);
    uint64_t need = 40 + extra.size() + s.id.size() + s.name.size();
    size_t base = out.size();
    out.resize(base + ((need + 7) & ~7ULL), 0);
    uint8_t* p = out.data() + base;
    StoreBe64(p, s.l1_table_offset);
    StoreBe32(p + 8, s.l1_size);
    StoreBe16(p + 12, s.id.size());
    StoreBe16(p + 14, s.name.size());
    StoreBe32(p + 16, s.date_sec);
    StoreBe32(p + 20, s.date_nsec);
    StoreBe64(p + 24, s.vm_clock_nsec);
    StoreBe32(p + 32, s.vm_state_size > 0xffffffffULL ? 0 : s.vm_state_size);
    StoreBe32(p + 36, extra.size());
    memcpy(p + 40, extra.data(), extra.size());
    memcpy(p + 40 + extra.size(), s.id.data(), s.id.size());
    memcpy(p + 40 + extra.size() + s.id.size(), s.name.data(), s.name.size());
  }
  return out;
}

}  // namespace block::qcow2
