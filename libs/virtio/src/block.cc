#include "virtio/block.h"

#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"

namespace virtio {
namespace {

struct RequestHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(RequestHeader) == 16);

struct DiscardSegment {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;  // bit 0: unmap (write zeroes only)
};
static_assert(sizeof(DiscardSegment) == 16);

constexpr uint32_t kUnmap = 1;

// struct virtio_blk_config up to write_zeroes_may_unmap (spec 5.2.4).
struct __attribute__((packed)) BlkConfig {
  uint64_t capacity;
  uint32_t size_max;
  uint32_t seg_max;
  uint16_t cylinders;
  uint8_t heads;
  uint8_t sectors;
  uint32_t blk_size;
  uint8_t physical_block_exp;
  uint8_t alignment_offset;
  uint16_t min_io_size;
  uint32_t opt_io_size;
  uint8_t writeback;
  uint8_t unused0;
  uint16_t num_queues;
  uint32_t max_discard_sectors;
  uint32_t max_discard_seg;
  uint32_t discard_sector_alignment;
  uint32_t max_write_zeroes_sectors;
  uint32_t max_write_zeroes_seg;
  uint8_t write_zeroes_may_unmap;
  uint8_t unused1[3];
};
static_assert(sizeof(BlkConfig) == 60);

}  // namespace

Block::Block(std::unique_ptr<block::Image> image, BlockOptions options)
    : image_(std::move(image)), options_(std::move(options)) {
  if (options_.serial.size() > kBlkIdBytes) options_.serial.resize(kBlkIdBytes);
}

std::string Block::name() const {
  return options_.serial.empty() ? "virtio-blk" : absl::StrCat("virtio-blk ", options_.serial);
}

uint64_t Block::features() const {
  uint64_t f = Bit(kBlkFSegMax) | Bit(kBlkFBlkSize) | Bit(kBlkFFlush) | Bit(kBlkFSizeMax);
  if (options_.read_only) return f | Bit(kBlkFRo);
  return f | Bit(kBlkFDiscard) | Bit(kBlkFWriteZeroes);
}

void Block::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  BlkConfig c = {};
  c.capacity = capacity_sectors();
  c.size_max = 1u << 20;
  c.seg_max = kSegMax;
  c.blk_size = kSectorSize;
  c.num_queues = 1;
  c.max_discard_sectors = kMaxDiscardSectors;
  c.max_discard_seg = kMaxDiscardSegments;
  c.discard_sector_alignment = 1;
  c.max_write_zeroes_sectors = kMaxDiscardSectors;
  c.max_write_zeroes_seg = kMaxDiscardSegments;
  c.write_zeroes_may_unmap = 1;
  CopyConfig({reinterpret_cast<const uint8_t*>(&c), sizeof(c)}, offset, data);
}

absl::Status Block::Activate(const ActivateContext& ctx) {
  ctx_ = ctx;
  // A driver that cannot flush gets write-through (spec 5.2.6.2).
  write_through_ = !(ctx.features & Bit(kBlkFFlush));
  return absl::OkStatus();
}

absl::Status Block::ProcessQueue(uint16_t index) {
  return ServeQueue(ctx_, index, [this](const DescriptorChain& c) { return Serve(c); });
}

absl::StatusOr<uint32_t> Block::Serve(const DescriptorChain& chain) {
  if (chain.readable_bytes < sizeof(RequestHeader) || chain.writable_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block request of ", chain.readable_bytes, " readable and ", chain.writable_bytes,
        " writable bytes has no room for its header and status byte"));
  }
  ChainReader in(*ctx_.memory, chain);
  ChainWriter out(*ctx_.memory, chain);
  ASSIGN_OR_RETURN(RequestHeader h, in.ReadObj<RequestHeader>());
  uint64_t data_in = in.remaining();          // driver -> device
  uint64_t data_out = out.remaining() - 1;    // device -> driver, before status
  uint8_t status = Execute(h.type, h.sector, in, out, data_in, data_out);
  // The status byte is the chain's last writable byte.
  uint64_t skip = out.remaining() - 1;
  if (skip > 0) {
    // The request wrote less than the driver offered (e.g. an error).
    RETURN_IF_ERROR(out.TakeIovecs(skip).status());
  }
  RETURN_IF_ERROR(out.WriteObj(status));
  return static_cast<uint32_t>(std::min<uint64_t>(out.written(), UINT32_MAX));
}

uint8_t Block::Persist(uint8_t status) {
  if (status != kBlkSOk || !write_through_) return status;
  return image_->Flush().ok() ? kBlkSOk : kBlkSIoErr;
}

bool Block::InRange(uint64_t sector, uint64_t bytes) const {
  uint64_t cap = capacity_sectors();
  return sector <= cap && bytes / kSectorSize <= cap - sector && bytes % kSectorSize == 0;
}

uint8_t Block::Execute(uint32_t type, uint64_t sector, ChainReader& in, ChainWriter& out,
                       uint64_t data_in, uint64_t data_out) {
  switch (type) {
    case kBlkTIn:
      return ReadWrite(false, sector, in, out, data_out);
    case kBlkTOut:
      if (options_.read_only) return kBlkSIoErr;
      return Persist(ReadWrite(true, sector, in, out, data_in));
    case kBlkTFlush:
      if (!image_->Flush().ok()) return kBlkSIoErr;
      return kBlkSOk;
    case kBlkTGetId: {
      if (data_out < kBlkIdBytes) return kBlkSIoErr;
      uint8_t id[kBlkIdBytes] = {};
      std::memcpy(id, options_.serial.data(), options_.serial.size());
      return out.Write(id).ok() ? kBlkSOk : kBlkSIoErr;
    }
    case kBlkTDiscard:
    case kBlkTWriteZeroes:
      if (options_.read_only) return kBlkSIoErr;
      return Persist(DiscardOrZero(type == kBlkTWriteZeroes, in, data_in));
    default:
      return kBlkSUnsupp;
  }
}

uint8_t Block::ReadWrite(bool write, uint64_t sector, ChainReader& in, ChainWriter& out,
                         uint64_t len) {
  if (!InRange(sector, len)) return kBlkSIoErr;
  if (len == 0) return kBlkSOk;
  absl::StatusOr<std::vector<iovec>> iov = write ? in.TakeIovecs(len) : out.TakeIovecs(len);
  if (!iov.ok()) return kBlkSIoErr;
  uint64_t offset = sector * kSectorSize;
  absl::Status s = write ? image_->WriteV(offset, *iov) : image_->ReadV(offset, *iov);
  if (!s.ok()) {
    absl::FPrintF(stderr, "kindling: %s: %s at sector %d: %s\n", name(),
                  write ? "write" : "read", sector, s.message());
    return kBlkSIoErr;
  }
  return kBlkSOk;
}

uint8_t Block::DiscardOrZero(bool zero, ChainReader& in, uint64_t len) {
  if (len == 0 || len % sizeof(DiscardSegment) != 0 ||
      len / sizeof(DiscardSegment) > kMaxDiscardSegments) {
    return kBlkSIoErr;
  }
  for (uint64_t i = 0; i < len / sizeof(DiscardSegment); ++i) {
    absl::StatusOr<DiscardSegment> seg = in.ReadObj<DiscardSegment>();
    if (!seg.ok()) return kBlkSIoErr;
    if (seg->num_sectors > kMaxDiscardSectors) return kBlkSIoErr;
    if ((seg->flags & ~kUnmap) != 0 || (!zero && seg->flags != 0)) return kBlkSUnsupp;
    uint64_t bytes = uint64_t{seg->num_sectors} * kSectorSize;
    if (!InRange(seg->sector, bytes)) return kBlkSIoErr;
    uint64_t offset = seg->sector * kSectorSize;
    absl::Status s = zero ? image_->WriteZeroes(offset, bytes) : image_->Discard(offset, bytes);
    if (!s.ok()) return kBlkSIoErr;
  }
  return kBlkSOk;
}

}  // namespace virtio
