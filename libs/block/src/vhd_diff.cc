// VHD differencing disks: the parent, per-block sector bitmaps, and reads
// and writes that go to this file or the parent sector by sector. Also the
// block append both dynamic and differencing disks use.
#include <unistd.h>

#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "block/vhd.h"
#include "kindling/status_macros.h"
#include "libs/block/src/endian.h"
#include "libs/block/src/vhd_parent.h"

namespace block {
namespace {

constexpr uint32_t kNoBlock = 0xffffffff;
constexpr size_t kMaxCachedBitmaps = 4096;

}  // namespace

absl::Status VhdImage::OpenParent(const uint8_t* dyn, uint64_t fsize, const OpenOptions& o,
                                  std::vector<std::string>* chain) {
  const std::string& name = file_.name();
  if (chain == nullptr) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: a differencing VHD needs its parent: open it by path (OpenImage)", name));
  }
  ASSIGN_OR_RETURN(auto paths, vhd::ParentCandidates(file_, fsize, dyn));
  const std::vector<uint8_t> want(dyn + vhd::kParentUniqueId, dyn + vhd::kParentUniqueId + 16);
  std::string tried;
  for (const std::string& p : paths) {
    if (::access(p.c_str(), F_OK) != 0) {
      tried += (tried.empty() ? "" : ", ") + p;
      continue;
    }
    OpenOptions po = o;
    po.read_only = true;
    po.format = "vpc";
    auto img = OpenImageInChain(p, po, *chain);
    if (!img.ok()) {
      return absl::Status(img.status().code(), absl::StrFormat(
          "%s: VHD parent %s: %s", name, p, img.status().message()));
    }
    auto* parent = dynamic_cast<VhdImage*>(img->get());
    if (parent == nullptr) return absl::InternalError(p + " opened as vpc is not a VHD");
    const std::vector<uint8_t> got = parent->unique_id();
    if (got != want) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s: VHD parent %s has unique ID %s, but the dynamic header field parent "
          "unique id (offset %u) says %s: it is not the disk this one was made from",
          name, p, absl::BytesToHexString({reinterpret_cast<const char*>(got.data()), 16}),
          vhd::kParentUniqueId,
          absl::BytesToHexString({reinterpret_cast<const char*>(want.data()), 16})));
    }
    parent_ = std::move(*img);
    parent_path_ = p;
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrFormat(
      "%s: the parent of this differencing VHD is not there (tried: %s)", name,
      tried.empty() ? "no parent locator or name in the header" : tried));
}

bool VhdImage::SectorPresent(const std::vector<uint8_t>& bitmap, uint64_t sector) const {
  return (bitmap[sector / 8] >> (7 - sector % 8)) & 1;  // sector 0: the first byte's top bit
}

uint64_t VhdImage::SectorRun(const std::vector<uint8_t>& bitmap, uint64_t from,
                             uint64_t limit, bool* here) const {
  *here = SectorPresent(bitmap, from / 512);
  uint64_t end = (from / 512 + 1) * 512;
  while (end < limit && SectorPresent(bitmap, end / 512) == *here) end += 512;
  return std::min(end, limit) - from;
}

absl::StatusOr<const std::vector<uint8_t>*> VhdImage::Bitmap(uint64_t b) {
  if (auto it = bitmaps_.find(b); it != bitmaps_.end()) return &it->second;
  if (bitmaps_.size() >= kMaxCachedBitmaps) bitmaps_.clear();  // written through: clean
  std::vector<uint8_t> bm(bitmap_size_);
  RETURN_IF_ERROR(file_.PRead(bm.data(), bm.size(), uint64_t(bat_[b]) * 512));
  return &(bitmaps_[b] = std::move(bm));
}

absl::Status VhdImage::ReadDiffBlock(uint64_t b, uint32_t e, uint64_t in,
                                     std::span<const iovec> out) {
  std::vector<uint8_t> bm;
  {
    std::lock_guard<std::mutex> l(mu_);
    ASSIGN_OR_RETURN(const std::vector<uint8_t>* cached, Bitmap(b));
    bm = *cached;  // bits only ever get set: a copy is safe to read unlocked
  }
  return ReadSectors(b, e, in, out, bm);
}

absl::Status VhdImage::ReadSectors(uint64_t b, uint32_t e, uint64_t in,
                                   std::span<const iovec> out,
                                   const std::vector<uint8_t>& bm) {
  const uint64_t data = uint64_t(e) * 512 + bitmap_size_;
  const uint64_t n = IovLength(out);
  for (uint64_t pos = 0; pos < n;) {
    bool present;
    const uint64_t run = SectorRun(bm, in + pos, in + n, &present);
    auto slice = IovSlice(out, pos, run);
    RETURN_IF_ERROR(present ? file_.PReadV(slice, data + in + pos)
                            : ReadBacking(parent_.get(), parent_->size(),
                                          b * block_size_ + in + pos, slice));
    pos += run;
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> VhdImage::AppendBlock(uint64_t b, bool all_present) {
  // Bitmap, zeros, footer; the caller writes the data, then the BAT entry.
  const uint64_t at = footer_pos_;
  if ((at / 512) >= kNoBlock) {
    return absl::ResourceExhaustedError(file_.name() + ": VHD file is full");
  }
  std::vector<uint8_t> bitmap(bitmap_size_, all_present ? 0xff : 0);
  RETURN_IF_ERROR(file_.PWrite(bitmap.data(), bitmap.size(), at));
  const uint64_t end = at + bitmap_size_ + block_size_;
  RETURN_IF_ERROR(file_.Truncate(end));
  RETURN_IF_ERROR(file_.PWrite(footer_.data(), 512, end));
  footer_pos_ = end;
  if (parent_) bitmaps_[b] = std::move(bitmap);
  return uint32_t(at / 512);
}

absl::Status VhdImage::SetBat(uint64_t b, uint32_t e) {
  uint8_t be[4];
  internal::StoreBe32(be, e);
  RETURN_IF_ERROR(file_.PWrite(be, 4, bat_offset_ + b * 4));
  bat_[b] = e;
  return absl::OkStatus();
}

// One block's share of a write: whole sectors to this file (partial ones
// completed from what the disk holds now), then the bitmap, then for a new
// block the BAT entry.
absl::Status VhdImage::WriteDiff(uint64_t offset, std::span<const iovec> iov) {
  const uint64_t len = IovLength(iov);
  std::lock_guard<std::mutex> l(mu_);
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t g = offset + pos;
    const uint64_t b = g / block_size_, in = g % block_size_;
    const uint64_t n = std::min(block_size_ - in, len - pos);
    auto slice = IovSlice(iov, pos, n);
    const bool fresh = bat_[b] == kNoBlock;
    uint32_t e = bat_[b];
    if (fresh) {
      ASSIGN_OR_RETURN(e, AppendBlock(b, false));
    } else if (uint64_t(e) * 512 + bitmap_size_ + block_size_ > footer_pos_) {
      return absl::DataLossError(absl::StrFormat(
          "%s: VHD BAT entry %u (file offset 0x%x) points past the end of the file",
          file_.name(), b, bat_offset_ + b * 4));
    }
    ASSIGN_OR_RETURN(const std::vector<uint8_t>* cached, Bitmap(b));
    std::vector<uint8_t> bm = *cached;  // we hold mu_ throughout: it stays current
    const uint64_t s0 = in / 512, s1 = (in + n + 511) / 512;
    const uint64_t data = uint64_t(e) * 512 + bitmap_size_;
    if (in % 512 == 0 && n % 512 == 0) {
      RETURN_IF_ERROR(file_.PWriteV(slice, data + in));
    } else {
      // A partial sector: complete it from what the disk holds (rare: guests
      // write whole sectors), under the lock so no write slips in between.
      std::vector<uint8_t> buf((s1 - s0) * 512);
      iovec first{buf.data(), 512}, last{buf.data() + buf.size() - 512, 512};
      RETURN_IF_ERROR(ReadSectors(b, e, s0 * 512, {&first, 1}, bm));
      if (s1 - s0 > 1) RETURN_IF_ERROR(ReadSectors(b, e, (s1 - 1) * 512, {&last, 1}, bm));
      IovCopyOut(slice, 0, buf.data() + (in - s0 * 512), n);
      RETURN_IF_ERROR(file_.PWrite(buf.data(), buf.size(), data + s0 * 512));
    }
    bool changed = false;
    for (uint64_t s = s0; s < s1; ++s) {
      if (!SectorPresent(bm, s)) {
        bm[s / 8] |= uint8_t(0x80 >> (s % 8));
        changed = true;
      }
    }
    if (changed) {
      RETURN_IF_ERROR(file_.PWrite(bm.data(), bm.size(), uint64_t(e) * 512));
      bitmaps_[b] = std::move(bm);
    }
    if (fresh) RETURN_IF_ERROR(SetBat(b, e));
    pos += n;
  }
  return absl::OkStatus();
}

}  // namespace block
