// VHD fixed, dynamic and differencing disks. Facts from the Virtual Hard
// Disk Image Format Specification and QEMU's block/vpc.c behaviour; code is
// ours. Differencing-disk I/O is in vhd_diff.cc, parent fields in
// vhd_parent.cc.
#include "block/vhd.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include <cstring>

#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"
#include "libs/block/src/endian.h"
#include "libs/block/src/vhd_parent.h"

namespace block {

using internal::LoadBe16;
using internal::LoadBe32;
using internal::LoadBe64;
using internal::StoreBe16;
using internal::StoreBe32;
using internal::StoreBe64;

namespace {

constexpr uint32_t kFixed = 2, kDynamic = 3, kDifferencing = 4;
constexpr uint64_t kMaxGeometry = 65535ULL * 16 * 255;
constexpr uint64_t kMaxSize = 2040ULL << 30;
constexpr uint32_t kNoBlock = 0xffffffff;

uint32_t Checksum(const uint8_t* p, size_t n, size_t csum_off) {
  uint32_t sum = 0;
  for (size_t i = 0; i < n; ++i) {
    if (i >= csum_off && i < csum_off + 4) continue;
    sum += p[i];
  }
  return ~sum;
}

void Geometry(uint64_t total, uint16_t* cyl, uint8_t* heads, uint8_t* spt) {
  uint64_t cth;
  uint32_t h, s;
  if (total > kMaxGeometry) total = kMaxGeometry;
  if (total >= 65535ULL * 16 * 63) {
    s = 255;
    h = 16;
    cth = total / s;
  } else {
    s = 17;
    cth = total / s;
    h = (cth + 1023) / 1024;
    if (h < 4) h = 4;
    if (cth >= h * 1024 || h > 16) {
      s = 31;
      h = 16;
      cth = total / s;
    }
    if (cth >= h * 1024) {
      s = 63;
      h = 16;
      cth = total / s;
    }
  }
  *cyl = cth / h;
  *heads = h;
  *spt = s;
}

constexpr time_t kVhdEpoch = 946684800;  // 2000-01-01 00:00:00 UTC

std::vector<uint8_t> MakeFooter(uint64_t size, uint32_t type) {
  const bool fixed = type == kFixed;
  std::vector<uint8_t> f(512, 0);
  memcpy(&f[0], "conectix", 8);
  StoreBe32(&f[8], 2);
  StoreBe32(&f[12], 0x00010000);
  StoreBe64(&f[16], fixed ? ~0ULL : 512);
  StoreBe32(&f[24], uint32_t(time(nullptr) - kVhdEpoch));
  memcpy(&f[28], "qem2", 4);  // "use current_size", as QEMU's force_size
  StoreBe32(&f[32], 0x00050003);
  memcpy(&f[36], "Wi2k", 4);
  StoreBe64(&f[40], size);
  StoreBe64(&f[48], size);
  uint16_t c;
  uint8_t h, s;
  Geometry(size / 512, &c, &h, &s);
  StoreBe16(&f[56], c);
  f[58] = h;
  f[59] = s;
  StoreBe32(&f[60], type);
  for (int i = 0; i < 16; ++i) f[68 + i] = uint8_t(rand());
  StoreBe32(&f[64], Checksum(f.data(), 512, 64));
  return f;
}

// What a new differencing disk needs of its parent (size 0: the parent's).
absl::StatusOr<vhd::NewParent> ReadNewParent(const std::string& child,
                                             const std::string& stored, uint64_t* size) {
  std::string path = stored;
  if (!path.empty() && path[0] != '/') path = child.substr(0, child.rfind('/') + 1) + path;
  auto parent = OpenImage(path, {.read_only = true, .format = "vpc"});
  if (!parent.ok()) {
    return absl::Status(parent.status().code(), absl::StrFormat(
        "VHD parent %s: %s", path, parent.status().message()));
  }
  auto* vhd = dynamic_cast<VhdImage*>(parent->get());
  if (vhd == nullptr) return absl::InvalidArgumentError(path + " is not a VHD");
  if (*size == 0) *size = vhd->size();
  struct stat st{};
  if (stat(path.c_str(), &st) != 0) return absl::NotFoundError(path + ": stat failed");
  char* real = realpath(path.c_str(), nullptr);
  std::string absolute = real ? real : path;
  free(real);
  return vhd::NewParent{.unique_id = vhd->unique_id(),
                        .time_stamp = uint32_t(st.st_mtime - kVhdEpoch),
                        .stored = stored,
                        .absolute = absolute};
}

}  // namespace

absl::Status VhdImage::Create(const std::string& path, const VhdCreateOptions& o) {
  uint64_t size = o.size;
  vhd::NewParent parent;
  if (!o.parent.empty()) {
    if (o.fixed) return absl::InvalidArgumentError("a fixed VHD cannot have a parent");
    ASSIGN_OR_RETURN(parent, ReadNewParent(path, o.parent, &size));
  }
  if (size > kMaxSize || size % 512 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "VHD size %u must be a multiple of 512 up to 2040 GiB", size));
  }
  if (o.block_size < 512 || (o.block_size & (o.block_size - 1)) ||
      o.block_size > (256u << 20)) {
    return absl::InvalidArgumentError("VHD block size must be a power of two, 512 B..256 MiB");
  }
  auto footer = MakeFooter(size, o.fixed ? kFixed : o.parent.empty() ? kDynamic : kDifferencing);
  if (o.fixed) {
    ASSIGN_OR_RETURN(File f, File::Open(path, {.create = true}));
    RETURN_IF_ERROR(f.Truncate(size));
    RETURN_IF_ERROR(f.PWrite(footer.data(), 512, size));
    return f.DataSync();
  }
  const uint64_t entries = (size + o.block_size - 1) / o.block_size;
  const uint64_t bat_bytes = (entries * 4 + 511) / 512 * 512;
  std::vector<uint8_t> dyn(1024, 0);
  memcpy(&dyn[0], "cxsparse", 8);
  StoreBe64(&dyn[8], ~0ULL);
  StoreBe64(&dyn[16], 1536);
  StoreBe32(&dyn[24], 0x00010000);
  StoreBe32(&dyn[28], entries);
  StoreBe32(&dyn[32], o.block_size);
  std::vector<uint8_t> locators;
  if (!o.parent.empty()) {
    ASSIGN_OR_RETURN(locators, vhd::EncodeParent(dyn.data(), parent, 1536 + bat_bytes));
  }
  StoreBe32(&dyn[36], Checksum(dyn.data(), 1024, 36));
  std::vector<uint8_t> bat(bat_bytes, 0xff);
  ASSIGN_OR_RETURN(File f, File::Open(path, {.create = true}));
  RETURN_IF_ERROR(f.PWrite(footer.data(), 512, 0));
  RETURN_IF_ERROR(f.PWrite(dyn.data(), 1024, 512));
  RETURN_IF_ERROR(f.PWrite(bat.data(), bat.size(), 1536));
  if (!locators.empty()) RETURN_IF_ERROR(f.PWrite(locators.data(), locators.size(), 1536 + bat_bytes));
  RETURN_IF_ERROR(f.PWrite(footer.data(), 512, 1536 + bat_bytes + locators.size()));
  return f.DataSync();
}

absl::StatusOr<std::unique_ptr<VhdImage>> VhdImage::Open(const std::string& path,
                                                         const OpenOptions& o) {
  std::vector<std::string> chain;
  if (char* real = realpath(path.c_str(), nullptr)) {
    chain.push_back(real);
    free(real);
  }
  return OpenInChain(path, o, &chain);
}

absl::StatusOr<std::unique_ptr<VhdImage>> VhdImage::OpenInChain(
    const std::string& path, const OpenOptions& o, std::vector<std::string>* chain) {
  ASSIGN_OR_RETURN(File f, File::Open(path, {.read_only = o.read_only, .direct = o.direct}));
  std::unique_ptr<VhdImage> v(new VhdImage(std::move(f)));
  RETURN_IF_ERROR(v->Load(o, chain));
  return v;
}

absl::StatusOr<std::unique_ptr<VhdImage>> VhdImage::OpenFile(File file,
                                                             std::vector<std::string>* chain) {
  std::unique_ptr<VhdImage> v(new VhdImage(std::move(file)));
  RETURN_IF_ERROR(v->Load({.read_only = v->file_.read_only()}, chain));
  return v;
}

std::vector<uint8_t> VhdImage::unique_id() const {
  return {footer_.begin() + vhd::kFooterUniqueId, footer_.begin() + vhd::kFooterUniqueId + 16};
}

absl::Status VhdImage::Load(const OpenOptions& o, std::vector<std::string>* chain) {
  const std::string& name = file_.name();
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrFormat("%s: VHD %s", name, why));
  };
  ASSIGN_OR_RETURN(uint64_t fsize, file_.Size());
  if (fsize < 512) return bad("file is shorter than a footer");
  footer_.resize(512);
  // The footer is at the end; dynamic disks also keep a copy at offset 0
  // (used if the end one is damaged, as QEMU does).
  RETURN_IF_ERROR(file_.PRead(footer_.data(), 512, fsize - 512));
  footer_pos_ = fsize - 512;
  if (memcmp(footer_.data(), "conectix", 8) != 0) {
    RETURN_IF_ERROR(file_.PRead(footer_.data(), 512, 0));
    if (memcmp(footer_.data(), "conectix", 8) != 0) {
      return bad("footer field cookie (offset 0): no 'conectix' at the end or start");
    }
    footer_pos_ = fsize;  // appended blocks will restore a trailing footer
  }
  const uint8_t* f = footer_.data();
  if (LoadBe32(f + 64) != Checksum(f, 512, 64)) {
    return bad(absl::StrFormat("footer field checksum (offset 64): 0x%08x does not "
                               "match the footer (0x%08x)",
                               LoadBe32(f + 64), Checksum(f, 512, 64)));
  }
  const uint32_t type = LoadBe32(f + 60);
  if (type != kFixed && type != kDynamic && type != kDifferencing) {
    return bad(absl::StrFormat("footer field disk type (offset 60): %u is not 2, 3 or 4", type));
  }
  fixed_ = type == kFixed;
  // Visible size: as QEMU decides it (CHS for some creators).
  const uint64_t cur = LoadBe64(f + 48);
  const uint64_t chs = uint64_t(LoadBe16(f + 56)) * f[58] * f[59];
  bool use_chs = memcmp(f + 28, "win ", 4) && memcmp(f + 28, "qem2", 4) &&
                 memcmp(f + 28, "d2v ", 4) && memcmp(f + 28, "CTXS", 4) &&
                 memcmp(f + 28, "tap", 4);
  size_ = (!use_chs || chs == kMaxGeometry) ? cur / 512 * 512 : chs * 512;
  if (size_ > kMaxSize) {
    return bad(absl::StrFormat("footer field current size (offset 48): %u is above 2040 GiB", cur));
  }
  if (fixed_) {
    if (size_ > fsize - 512) {
      return bad(absl::StrFormat("fixed disk of %u bytes does not fit the %u-byte file", size_, fsize));
    }
    return absl::OkStatus();
  }
  const uint64_t dyn_off = LoadBe64(f + 16);
  if (dyn_off % 512 || dyn_off > fsize || fsize - dyn_off < 1024) {
    return bad(absl::StrFormat("footer field data offset (offset 16): 0x%x is outside the file", dyn_off));
  }
  std::vector<uint8_t> dyn(1024);
  RETURN_IF_ERROR(file_.PRead(dyn.data(), 1024, dyn_off));
  if (memcmp(dyn.data(), "cxsparse", 8) != 0) {
    return bad(absl::StrFormat("dynamic header cookie (file offset 0x%x): no 'cxsparse'", dyn_off));
  }
  bat_offset_ = LoadBe64(&dyn[16]);
  const uint32_t entries = LoadBe32(&dyn[28]);
  block_size_ = LoadBe32(&dyn[32]);
  if (block_size_ < 512 || (block_size_ & (block_size_ - 1)) || block_size_ > (256u << 20)) {
    return bad(absl::StrFormat("dynamic header field block size (offset 32): %u", block_size_));
  }
  if (uint64_t(entries) * block_size_ < size_ || entries > (kMaxSize / 512)) {
    return bad(absl::StrFormat("dynamic header field max table entries (offset 28): %u "
                               "blocks of %u bytes cannot map %u bytes",
                               entries, block_size_, size_));
  }
  if (bat_offset_ % 512 || bat_offset_ > fsize || uint64_t(entries) * 4 > fsize - bat_offset_) {
    return bad(absl::StrFormat("dynamic header field table offset (offset 16): BAT at 0x%x "
                               "(%u entries) runs past the end of the file",
                               bat_offset_, entries));
  }
  bitmap_size_ = (block_size_ / 512 / 8 + 511) / 512 * 512;
  bat_.resize(entries);
  RETURN_IF_ERROR(file_.PRead(bat_.data(), uint64_t(entries) * 4, bat_offset_));
  for (auto& e : bat_) e = __builtin_bswap32(e);
  if (type == kDifferencing) return OpenParent(dyn.data(), fsize, o, chain);
  return absl::OkStatus();
}

Capabilities VhdImage::capabilities() const {
  return {.read_only = file_.read_only(), .backing = parent_ != nullptr};
}

absl::Status VhdImage::ReadV(uint64_t offset, std::span<const iovec> iov) {
  const uint64_t len = IovLength(iov);
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (fixed_) return file_.PReadV(iov, offset);
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t g = offset + pos;
    const uint64_t b = g / block_size_, in = g % block_size_;
    const uint64_t n = std::min(block_size_ - in, len - pos);
    uint32_t e;
    {
      std::lock_guard<std::mutex> l(mu_);
      e = bat_[b];
    }
    auto slice = IovSlice(iov, pos, n);
    if (e == kNoBlock) {
      if (parent_) {
        RETURN_IF_ERROR(ReadBacking(parent_.get(), parent_->size(), g, slice));
      } else {
        IovZero(slice);
      }
    } else if (parent_) {
      RETURN_IF_ERROR(ReadDiffBlock(b, e, in, slice));
    } else {
      RETURN_IF_ERROR(file_.PReadV(slice, uint64_t(e) * 512 + bitmap_size_ + in));
    }
    pos += n;
  }
  return absl::OkStatus();
}

absl::Status VhdImage::WriteV(uint64_t offset, std::span<const iovec> iov) {
  const uint64_t len = IovLength(iov);
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (file_.read_only()) return absl::PermissionDeniedError(file_.name() + " is read-only");
  if (fixed_) return file_.PWriteV(iov, offset);
  if (parent_) return WriteDiff(offset, iov);
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t g = offset + pos;
    const uint64_t b = g / block_size_, in = g % block_size_;
    const uint64_t n = std::min(block_size_ - in, len - pos);
    std::unique_lock<std::mutex> l(mu_);
    uint32_t e = bat_[b];
    if (e == kNoBlock) {
      // Append (bitmap: all sectors present), the data, then the BAT entry
      // that makes the block visible after a crash.
      ASSIGN_OR_RETURN(e, AppendBlock(b, true));
      RETURN_IF_ERROR(file_.PWriteV(IovSlice(iov, pos, n), uint64_t(e) * 512 + bitmap_size_ + in));
      RETURN_IF_ERROR(SetBat(b, e));
    } else {
      if (uint64_t(e) * 512 + bitmap_size_ + block_size_ > footer_pos_) {
        return absl::DataLossError(absl::StrFormat(
            "%s: VHD BAT entry %u (file offset 0x%x) points past the end of the file",
            file_.name(), b, bat_offset_ + b * 4));
      }
      l.unlock();
      RETURN_IF_ERROR(file_.PWriteV(IovSlice(iov, pos, n), uint64_t(e) * 512 + bitmap_size_ + in));
    }
    pos += n;
  }
  return absl::OkStatus();
}

absl::Status VhdImage::Flush() { return file_.DataSync(); }

absl::Status VhdImage::Discard(uint64_t offset, uint64_t len) {
  return CheckRange(offset, len);  // a hint; VHD has no way to free a block
}

absl::Status VhdImage::WriteZeroes(uint64_t offset, uint64_t len) {
  RETURN_IF_ERROR(CheckRange(offset, len));
  std::vector<uint8_t> zeros(std::min<uint64_t>(len, 1 << 20), 0);
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t g = offset + pos;
    uint64_t n = std::min<uint64_t>(zeros.size(), len - pos);
    if (!fixed_) {
      n = std::min(n, block_size_ - g % block_size_);
      std::lock_guard<std::mutex> l(mu_);
      if (bat_[g / block_size_] == kNoBlock && !parent_) {  // already reads zeros
        pos += n;
        continue;
      }
    }
    RETURN_IF_ERROR(Write(g, zeros.data(), n));
    pos += n;
  }
  return absl::OkStatus();
}

std::optional<DirectMapping> VhdImage::MapDirect(uint64_t offset, uint64_t len,
                                                bool write) {
  if (len == 0 || !CheckRange(offset, len).ok() || (write && file_.read_only())) {
    return std::nullopt;
  }
  DirectMapping m;
  if (fixed_) {
    m.extents.push_back({&file_, offset, len});
    return m;
  }
  std::unique_lock<std::mutex> l(mu_, std::try_to_lock);
  if (!l.owns_lock()) return std::nullopt;
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t g = offset + pos;
    const uint64_t b = g / block_size_, in = g % block_size_;
    const uint64_t n = std::min(block_size_ - in, len - pos);
    const uint32_t e = bat_[b];
    if (e == kNoBlock) {
      if (write) return std::nullopt;  // needs a new block
      // A dynamic disk's hole reads zeros; a differencing one's, the parent.
      if (!MapBacking(parent_.get(), parent_ ? parent_->size() : 0, g, n, m)) {
        return std::nullopt;
      }
      pos += n;
      continue;
    }
    const uint64_t at = uint64_t(e) * 512 + bitmap_size_;
    if (at + block_size_ > footer_pos_) return std::nullopt;  // ReadV/WriteV say why
    if (!parent_) {
      AppendExtent(m.extents, {&file_, at + in, n});
      pos += n;
      continue;
    }
    // Differencing: runs of sectors present here, or (reading) the parent's.
    auto it = bitmaps_.find(b);
    if (it == bitmaps_.end()) return std::nullopt;  // ReadV loads it
    for (uint64_t done = 0; done < n;) {
      const uint64_t x = in + done;
      bool here;
      const uint64_t run = SectorRun(it->second, x, in + n, &here);
      if (here) {
        AppendExtent(m.extents, {&file_, at + x, run});
      } else if (write ||
                 !MapBacking(parent_.get(), parent_->size(), b * block_size_ + x, run, m)) {
        return std::nullopt;
      }
      done += run;
    }
    pos += n;
  }
  return m;
}

absl::StatusOr<Extent> VhdImage::BlockStatus(uint64_t offset, uint64_t len) {
  RETURN_IF_ERROR(CheckRange(offset, len));
  if (fixed_ || len == 0) return Extent{ExtentKind::kData, len};
  std::lock_guard<std::mutex> l(mu_);
  const bool alloc = bat_[offset / block_size_] != kNoBlock;
  uint64_t run = std::min(block_size_ - offset % block_size_, len);
  if (alloc && parent_) {  // sector by sector: present here, or the parent's
    ASSIGN_OR_RETURN(const std::vector<uint8_t>* bm, Bitmap(offset / block_size_));
    const uint64_t in = offset % block_size_;
    bool here;
    const uint64_t n = SectorRun(*bm, in, in + run, &here);
    return Extent{here ? ExtentKind::kData : ExtentKind::kUnallocated, n};
  }
  while (run < len && (bat_[(offset + run) / block_size_] != kNoBlock) == alloc) {
    run += std::min(block_size_, len - run);
  }
  return Extent{alloc ? ExtentKind::kData : ExtentKind::kUnallocated, run};
}

}  // namespace block
