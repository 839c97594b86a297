#include "migration/memory_file.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace migration {
namespace {

constexpr uint64_t kPage = 4096;
alignas(64) const uint8_t kZeros[kPage] = {};

// One region of guest RAM placed in the file's coordinates.
struct Span {
  uint64_t file_offset;
  uint64_t size;
  uint8_t* host;
  uint64_t guest;
  int fd;
  bool private_file;
};

// Bytes of the file that are not a hole, and where they live in memory.
struct Extent {
  uint64_t file_offset;
  uint64_t size;
  const uint8_t* host;
};

std::vector<Span> Spans(const vm_memory::GuestMemory& memory) {
  std::vector<Span> spans;
  uint64_t off = 0;
  for (const vm_memory::GuestRegion* r : memory.regions()) {
    spans.push_back({off, r->size(), reinterpret_cast<uint8_t*>(r->host_address().value),
                     r->start().value, r->fd(), r->private_file()});
    off += r->size();
  }
  return spans;
}


absl::Status WriteAll(int fd, const uint8_t* p, uint64_t len, uint64_t off) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, std::min<uint64_t>(len, 1 << 30), off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::ErrnoToStatus(n < 0 ? errno : EIO, "writing the memory file");
    p += n, len -= n, off += n;
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, uint8_t* p, uint64_t len, uint64_t off) {
  while (len > 0) {
    ssize_t n = ::pread(fd, p, std::min<uint64_t>(len, 1 << 30), off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, "reading the memory file");
    if (n == 0) return absl::DataLossError(absl::StrCat("memory file ends at ", off));
    p += n, len -= n, off += n;
  }
  return absl::OkStatus();
}

// Writes the non-zero pages of [lo, hi) of `span` and records them.
absl::Status WriteRange(const Span& span, uint64_t lo, uint64_t hi, int fd,
                        std::vector<Extent>& extents) {
  uint64_t run = lo;  // start of the current run of non-zero pages
  for (uint64_t p = lo; p <= hi; p += kPage) {
    bool zero = p == hi || std::memcmp(span.host + p, kZeros,
                                       std::min(kPage, hi - p)) == 0;
    if (!zero) continue;
    if (p > run) {
      absl::Status s = WriteAll(fd, span.host + run, p - run, span.file_offset + run);
      if (!s.ok()) return s;
      extents.push_back({span.file_offset + run, p - run, span.host + run});
    }
    run = p + kPage;
  }
  return absl::OkStatus();
}

// `crc` extended by `len` zero bytes, in O(log len) (crc32_combine with the
// CRCs of 2^i zero bytes) rather than by reading zeros: a sparse 256 MiB
// file's holes cost microseconds, not a scan of 256 MiB.
uLong AppendZeros(uLong crc, uint64_t len) {
  static const std::array<uLong, 48> kZeroCrc = [] {
    std::array<uLong, 48> t{};
    t[0] = crc32_z(0, kZeros, 1);
    for (size_t i = 1; i < t.size(); ++i) {
      t[i] = crc32_combine(t[i - 1], t[i - 1], static_cast<z_off_t>(1ULL << (i - 1)));
    }
    return t;
  }();
  for (size_t i = 0; len != 0 && i < kZeroCrc.size(); ++i, len >>= 1) {
    if (len & 1) crc = crc32_combine(crc, kZeroCrc[i], static_cast<z_off_t>(1ULL << i));
  }
  return crc;
}

// CRC-32 of each chunk of a file of `size` bytes whose non-zero bytes are
// `extents` (sorted, non-overlapping).
std::vector<uint32_t> ChunkCrcs(const std::vector<Extent>& extents, uint64_t size,
                                uint32_t chunk) {
  std::vector<uint32_t> crcs;
  size_t e = 0;
  for (uint64_t lo = 0; lo < size; lo += chunk) {
    uint64_t hi = std::min<uint64_t>(lo + chunk, size);
    uLong crc = crc32_z(0, nullptr, 0);
    uint64_t at = lo;
    while (at < hi) {
      while (e < extents.size() && extents[e].file_offset + extents[e].size <= at) ++e;
      bool in = e < extents.size() && extents[e].file_offset <= at;
      uint64_t end = in ? std::min(hi, extents[e].file_offset + extents[e].size)
                        : std::min(hi, e < extents.size() ? extents[e].file_offset : hi);
      if (in) {
        crc = crc32_z(crc, extents[e].host + (at - extents[e].file_offset), end - at);
      } else {
        crc = AppendZeros(crc, end - at);
      }
      at = end;
    }
    crcs.push_back(static_cast<uint32_t>(crc));
  }
  return crcs;
}

// The guest-physical ranges behind file bytes [lo, hi), e.g.
// "0x200000..0x300000 0x800000..0x900000".
std::string GuestRanges(const std::vector<Span>& spans, uint64_t lo, uint64_t hi) {
  std::string out;
  for (const Span& s : spans) {
    uint64_t a = std::max(lo, s.file_offset), b = std::min(hi, s.file_offset + s.size);
    if (a >= b) continue;
    absl::StrAppend(&out, out.empty() ? "" : " ", "0x",
                    absl::Hex(s.guest + (a - s.file_offset)), "..0x",
                    absl::Hex(s.guest + (b - s.file_offset)));
  }
  return out;
}

absl::Status CheckChunkSize(uint32_t chunk) {
  if (chunk < kPage || (chunk & (chunk - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory manifest chunk size ", chunk, " is not a power of two of at least 4096"));
  }
  return absl::OkStatus();
}

// The manifest's chunk size is sound and its file is exactly `memory`'s size.
absl::Status CheckManifestFits(const v1::MemoryManifest& manifest,
                               const vm_memory::GuestMemory& memory) {
  if (absl::Status s = CheckChunkSize(manifest.chunk_size()); !s.ok()) return s;
  if (manifest.file_size() != memory.total_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory file holds ", manifest.file_size(), " bytes, the VM has ",
        memory.total_size()));
  }
  return absl::OkStatus();
}

// Reads the file's bytes [lo, hi) of each range (sorted) into the guest RAM
// behind them, and records them as extents (sorted, for ChunkCrcs).
absl::Status ReadRanges(int fd, const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
                        const vm_memory::GuestMemory& memory, std::vector<Extent>& extents) {
  std::vector<Span> spans = Spans(memory);
  for (auto [lo, hi] : ranges) {
    for (const Span& span : spans) {
      uint64_t a = std::max(lo, span.file_offset), b = std::min(hi, span.file_offset + span.size);
      if (a >= b) continue;
      uint8_t* dst = span.host + (a - span.file_offset);
      if (absl::Status s = ReadAll(fd, dst, b - a, a); !s.ok()) return s;
      extents.push_back({a, b - a, dst});
    }
  }
  return absl::OkStatus();
}

// Compares the CRC-32 of each chunk of the file (whose non-zero bytes are
// `extents`, now in `memory`) with the manifest's.
absl::Status CheckChunkCrcs(const std::vector<Extent>& extents,
                            const v1::MemoryManifest& manifest,
                            const vm_memory::GuestMemory& memory) {
  const uint32_t chunk = manifest.chunk_size();
  std::vector<uint32_t> crcs = ChunkCrcs(extents, manifest.file_size(), chunk);
  if (static_cast<int>(crcs.size()) != manifest.chunk_crc32_size()) {
    return absl::DataLossError(absl::StrCat("memory manifest has ",
                                            manifest.chunk_crc32_size(),
                                            " checksums, the file has ", crcs.size(), " chunks"));
  }
  for (size_t i = 0; i < crcs.size(); ++i) {
    if (crcs[i] == manifest.chunk_crc32(i)) continue;
    uint64_t lo = i * uint64_t{chunk};
    uint64_t hi = std::min<uint64_t>(lo + chunk, manifest.file_size());
    return absl::DataLossError(absl::StrFormat(
        "memory file chunk %d (guest %s) fails its checksum: crc32 %08x, "
        "manifest %08x",
        i, GuestRanges(Spans(memory), lo, hi), crcs[i], manifest.chunk_crc32(i)));
  }
  return absl::OkStatus();
}

// Appends [lo, hi) to `ranges`, merged with the last range if they touch.
void AddRange(v1::MemoryManifest& m, uint64_t lo, uint64_t hi) {
  int n = m.present_size();
  if (n > 0 && m.present(n - 1).offset() + m.present(n - 1).size() == lo) {
    m.mutable_present(n - 1)->set_size(hi - m.present(n - 1).offset());
    return;
  }
  v1::FileRange* r = m.add_present();
  r->set_offset(lo);
  r->set_size(hi - lo);
}

// Writes the dirty pages of `span` (bits in `bits`) and lists them.
absl::Status WriteDirtyPages(const Span& span, const std::vector<uint64_t>& bits, int fd,
                             std::vector<Extent>& extents, v1::MemoryManifest& m) {
  const uint64_t pages = span.size / kPage;
  if (bits.size() < (pages + 63) / 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dirty bitmap of ", bits.size(), " words for a region of ", pages, " pages"));
  }
  auto dirty = [&](uint64_t p) { return (bits[p / 64] >> (p % 64)) & 1; };
  for (uint64_t p = 0; p < pages;) {
    if (!dirty(p)) {
      ++p;
      continue;
    }
    uint64_t q = p;
    while (q < pages && dirty(q)) ++q;
    if (absl::Status s = WriteRange(span, p * kPage, q * kPage, fd, extents); !s.ok()) return s;
    AddRange(m, span.file_offset + p * kPage, span.file_offset + q * kPage);
    if (m.present_size() > kMaxPresentRanges) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "more than ", kMaxPresentRanges, " dirty ranges: take a full snapshot"));
    }
    p = q;
  }
  return absl::OkStatus();
}

}  // namespace

// The data ranges of `fd` within [0, size), per SEEK_DATA/SEEK_HOLE (a file
// system without them reports one range: the whole file).
absl::StatusOr<std::vector<std::pair<uint64_t, uint64_t>>> DataRanges(int fd,
                                                                      uint64_t size) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  uint64_t off = 0;
  while (off < size) {
    off_t d = ::lseek(fd, static_cast<off_t>(off), SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) break;
      return absl::ErrnoToStatus(errno, "lseek(SEEK_DATA)");
    }
    if (static_cast<uint64_t>(d) >= size) break;
    off_t h = ::lseek(fd, d, SEEK_HOLE);
    if (h < 0) return absl::ErrnoToStatus(errno, "lseek(SEEK_HOLE)");
    uint64_t end = std::min<uint64_t>(h, size);
    out.push_back({static_cast<uint64_t>(d), end});
    off = end;
  }
  return out;
}

absl::StatusOr<v1::MemoryManifest> WriteMemoryFile(
    const vm_memory::GuestMemory& memory, int fd, uint32_t chunk_size) {
  if (chunk_size < kPage || (chunk_size & (chunk_size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk size ", chunk_size, " is not a power of two of at least 4096"));
  }
  uint64_t total = memory.total_size();
  if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(total)) != 0) {
    return absl::ErrnoToStatus(errno, "sizing the memory file");
  }
  std::vector<Extent> extents;
  for (const Span& span : Spans(memory)) {
    // A privately mapped file's holes do not show the guest's writes:
    // scan all of such a region.
    auto ranges = span.private_file
                      ? absl::StatusOr<std::vector<std::pair<uint64_t, uint64_t>>>(
                            std::vector<std::pair<uint64_t, uint64_t>>{{0, span.size}})
                      : DataRanges(span.fd, span.size);
    if (!ranges.ok()) return ranges.status();
    for (auto [lo, hi] : *ranges) {
      absl::Status s = WriteRange(span, lo, hi, fd, extents);
      if (!s.ok()) return s;
    }
  }
  v1::MemoryManifest m;
  m.set_file_size(total);
  m.set_chunk_size(chunk_size);
  for (uint32_t c : ChunkCrcs(extents, total, chunk_size)) m.add_chunk_crc32(c);
  return m;
}

absl::Status LoadMemoryFile(int fd, const v1::MemoryManifest& manifest,
                            vm_memory::GuestMemory& memory) {
  if (absl::Status s = CheckManifestFits(manifest, memory); !s.ok()) return s;
  auto ranges = DataRanges(fd, manifest.file_size());
  if (!ranges.ok()) return ranges.status();
  std::vector<Extent> extents;
  if (absl::Status s = ReadRanges(fd, *ranges, memory, extents); !s.ok()) return s;
  return CheckChunkCrcs(extents, manifest, memory);
}

absl::StatusOr<v1::MemoryManifest> WriteDiffMemoryFile(const vm_memory::GuestMemory& memory,
                                                       int fd, const PageBitmaps& dirty,
                                                       uint32_t chunk_size) {
  if (absl::Status s = CheckChunkSize(chunk_size); !s.ok()) return s;
  std::vector<Span> spans = Spans(memory);
  if (dirty.size() != spans.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        dirty.size(), " dirty bitmaps for ", spans.size(), " memory regions"));
  }
  uint64_t total = memory.total_size();
  if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(total)) != 0) {
    return absl::ErrnoToStatus(errno, "sizing the memory file");
  }
  v1::MemoryManifest m;
  std::vector<Extent> extents;
  for (size_t i = 0; i < spans.size(); ++i) {
    if (absl::Status s = WriteDirtyPages(spans[i], dirty[i], fd, extents, m); !s.ok()) return s;
  }
  m.set_file_size(total);
  m.set_chunk_size(chunk_size);
  for (uint32_t c : ChunkCrcs(extents, total, chunk_size)) m.add_chunk_crc32(c);
  return m;
}

absl::Status ValidatePresentRanges(const v1::MemoryManifest& m, uint64_t file_size) {
  if (m.present_size() > kMaxPresentRanges) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory manifest lists ", m.present_size(), " present ranges, at most ",
        kMaxPresentRanges));
  }
  uint64_t prev_end = 0;
  for (int i = 0; i < m.present_size(); ++i) {
    uint64_t lo = m.present(i).offset(), n = m.present(i).size();
    if (n == 0 || lo % kPage != 0 || n % kPage != 0 || lo + n < lo || lo + n > file_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "memory manifest present range ", i, " (offset ", lo, ", ", n,
          " bytes) is empty, unaligned or outside the ", file_size, "-byte file"));
    }
    if (i > 0 && lo <= prev_end) {
      return absl::InvalidArgumentError(absl::StrCat(
          "memory manifest present range ", i, " overlaps, touches or precedes the one before"));
    }
    prev_end = lo + n;
  }
  return absl::OkStatus();
}

absl::Status ApplyDiffMemoryFile(int fd, const v1::MemoryManifest& manifest,
                                 vm_memory::GuestMemory& memory) {
  if (absl::Status s = CheckManifestFits(manifest, memory); !s.ok()) return s;
  if (absl::Status s = ValidatePresentRanges(manifest, manifest.file_size()); !s.ok()) return s;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const v1::FileRange& r : manifest.present()) {
    ranges.push_back({r.offset(), r.offset() + r.size()});
  }
  std::vector<Extent> extents;
  // Holes in the diff read as zeros: they replace the base's bytes too.
  if (absl::Status s = ReadRanges(fd, ranges, memory, extents); !s.ok()) return s;
  return CheckChunkCrcs(extents, manifest, memory);
}

}  // namespace migration
