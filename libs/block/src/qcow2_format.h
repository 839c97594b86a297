// qcow2 on-disk structures: constants, the header and its extensions, the
// snapshot table; parsing that bounds every field and names it in errors.
// Facts from QEMU's docs/interop/qcow2.txt; the code is ours.
#ifndef KINDLING_BLOCK_SRC_QCOW2_FORMAT_H_
#define KINDLING_BLOCK_SRC_QCOW2_FORMAT_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace block::qcow2 {

inline constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
inline constexpr uint32_t kMinClusterBits = 9;   // 512 B
inline constexpr uint32_t kMaxClusterBits = 21;  // 2 MiB
inline constexpr uint32_t kV2HeaderLength = 72;
inline constexpr uint32_t kV3MinHeaderLength = 104;
inline constexpr uint32_t kV3HeaderLength = 112;  // with compression type
inline constexpr uint64_t kMaxL1Bytes = 32ULL << 20;        // as QEMU
inline constexpr uint64_t kMaxReftableBytes = 8ULL << 20;   // as QEMU
inline constexpr uint32_t kMaxSnapshots = 65536;
inline constexpr uint64_t kMaxSnapshotTableBytes = 64ULL << 20;
inline constexpr uint32_t kMaxBackingNameLength = 1023;
inline constexpr uint64_t kMaxDiskSize = 1ULL << 55;  // offsets are 56 bits

// Field offsets in the header.
inline constexpr uint64_t kOffBackingFileOffset = 8;
inline constexpr uint64_t kOffSize = 24;
inline constexpr uint64_t kOffL1Size = 36;
inline constexpr uint64_t kOffL1TableOffset = 40;
inline constexpr uint64_t kOffReftableOffset = 48;
inline constexpr uint64_t kOffReftableClusters = 56;
inline constexpr uint64_t kOffNbSnapshots = 60;
inline constexpr uint64_t kOffSnapshotsOffset = 64;
inline constexpr uint64_t kOffIncompatible = 72;
inline constexpr uint64_t kOffAutoclear = 88;

// Incompatible feature bits.
inline constexpr uint64_t kIncompatDirty = 1ULL << 0;
inline constexpr uint64_t kIncompatCorrupt = 1ULL << 1;
inline constexpr uint64_t kIncompatDataFile = 1ULL << 2;
inline constexpr uint64_t kIncompatCompression = 1ULL << 3;
inline constexpr uint64_t kIncompatExtendedL2 = 1ULL << 4;
inline constexpr uint64_t kCompatLazyRefcounts = 1ULL << 0;

// Header extension types.
inline constexpr uint32_t kExtEnd = 0;
inline constexpr uint32_t kExtBackingFormat = 0xe2792aca;
inline constexpr uint32_t kExtFeatureTable = 0x6803f857;
inline constexpr uint32_t kExtDataFile = 0x44415441;
inline constexpr uint32_t kExtCrypto = 0x0537be77;

// L1/L2 entry bits.
inline constexpr uint64_t kOflagCopied = 1ULL << 63;
inline constexpr uint64_t kOflagCompressed = 1ULL << 62;
inline constexpr uint64_t kOflagZero = 1ULL << 0;
inline constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ULL;  // bits 9-55
inline constexpr uint64_t kL1ReservedMask = 0x7f000000000001ffULL;
inline constexpr uint64_t kL2ReservedMask = 0x3f000000000001feULL;

enum class CompressionType : uint8_t { kZlib = 0, kZstd = 1 };

struct Header {
  uint32_t version = 3;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 16;
  uint64_t size = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = kV3HeaderLength;
  CompressionType compression_type = CompressionType::kZlib;
  // From the extensions and the backing file name field.
  std::string backing_file;
  std::string backing_format;
  bool has_data_file = false;

  uint64_t cluster_size() const { return 1ULL << cluster_bits; }
};

// Parses and validates the header in `cluster0` (the first cluster of the
// file, or as much of it as the file holds). `file_size` bounds every table
// offset. Errors name `name`, the field and its offset.
absl::StatusOr<Header> ParseHeader(std::span<const uint8_t> cluster0,
                                   uint64_t file_size, const std::string& name);

// Serialises `h` into a cluster-sized buffer: header, extensions (backing
// format, feature names), end marker, then the backing file name (whose
// offset and size it fills in). Fails if it does not fit in one cluster.
absl::StatusOr<std::vector<uint8_t>> SerializeHeader(Header h);

// L1 entries needed to map `size` bytes.
uint64_t L1EntriesFor(uint64_t size, uint32_t cluster_bits);

struct Snapshot {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  std::string id;
  std::string name;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t vm_state_size = 0;
  uint64_t disk_size = 0;  // from extra data; 0 = the image's size
  std::vector<uint8_t> extra;  // extra data as found (>= 16 bytes written)
};

absl::StatusOr<std::vector<Snapshot>> ParseSnapshotTable(
    std::span<const uint8_t> table, uint32_t count, uint32_t cluster_bits,
    uint64_t file_size, const std::string& name, uint64_t table_offset);
std::vector<uint8_t> SerializeSnapshotTable(const std::vector<Snapshot>& snaps);

}  // namespace block::qcow2

#endif  // KINDLING_BLOCK_SRC_QCOW2_FORMAT_H_
