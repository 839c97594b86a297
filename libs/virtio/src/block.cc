#include "virtio/block.h"

#include <cstdio>
#include <cstring>
#include <utility>

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
// Plan's answer when the request needs I/O (not a status byte value).
constexpr uint8_t kRun = 0xff;

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


// One guest request between parsing and its return to the driver.
struct Block::Op {
  uint16_t queue = 0;
  uint16_t head = 0;
  uint8_t* status = nullptr;  // host address of the chain's status byte
  uint32_t written = 0;       // bytes the device writes into the chain
  uint32_t type = 0;
  uint64_t sector = 0;
  uint64_t bytes = 0;                     // a read's or write's data
  std::vector<block::Request> requests;  // independent; run concurrently
  bool flush_after = false;              // write-through: flush once they are done
  // Filled by the completions.
  absl::Mutex mu;
  size_t remaining ABSL_GUARDED_BY(mu) = 0;
  uint8_t result = kBlkSOk;  // under mu until the last request completed
};

// What the backend's completion thread shares with the loop.
struct Block::Shared {
  absl::Mutex mu;
  size_t in_flight ABSL_GUARDED_BY(mu) = 0;  // ops submitted and not completed
  std::vector<std::unique_ptr<Op>> done ABSL_GUARDED_BY(mu);
  bool finish_posted ABSL_GUARDED_BY(mu) = false;
  // ActivateContext::post while the device is active; empty otherwise.
  std::function<void(std::function<absl::Status()>)> post ABSL_GUARDED_BY(mu);
};

namespace {

// GET_ID answers with at most kBlkIdBytes of the serial.
BlockOptions Trimmed(BlockOptions options) {
  if (options.serial.size() > kBlkIdBytes) options.serial.resize(kBlkIdBytes);
  return options;
}

}  // namespace

Block::Block(std::unique_ptr<block::Image> image, BlockOptions options)
    : image_(std::move(image)), size_(image_->size()), options_(Trimmed(std::move(options))) {}

Block::Block(std::unique_ptr<block::BlockBackend> backend, BlockOptions options)
    : backend_(std::move(backend)),
      size_(backend_->size()),
      options_(Trimmed(std::move(options))),
      shared_(std::make_unique<Shared>()) {}

Block::~Block() {
  if (shared_) {
    absl::MutexLock l(&shared_->mu);
    shared_->post = nullptr;  // the loop may be gone already
  }
  // The backend waits for its callbacks; chains they queued are dropped.
  backend_.reset();
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
  if (backend_ && !ctx.post) {
    return absl::FailedPreconditionError(
        "virtio-blk over a BlockBackend needs ActivateContext::post for its completions");
  }
  ctx_ = ctx;
  // A driver that cannot flush gets write-through (spec 5.2.6.2).
  write_through_ = !(ctx.features & Bit(kBlkFFlush));
  if (shared_) {
    absl::MutexLock l(&shared_->mu);
    shared_->post = ctx.post;
  }
  return absl::OkStatus();
}

void Block::Reset() {
  WaitIdle();
  if (shared_) {
    absl::MutexLock l(&shared_->mu);
    shared_->done.clear();  // their queues are being reset
    shared_->post = nullptr;
  }
  ctx_ = {};
}

size_t Block::in_flight() const {
  if (!shared_) return 0;
  absl::MutexLock l(&shared_->mu);
  return shared_->in_flight;
}

absl::StatusOr<bool> Block::Quiesce() {
  if (in_flight() > 0) return false;
  RETURN_IF_ERROR(FinishCompleted());
  return true;
}

void Block::WaitIdle() {
  if (!shared_) return;
  absl::MutexLock l(&shared_->mu);
  shared_->mu.Await(absl::Condition(
      +[](size_t* n) { return *n == 0; }, &shared_->in_flight));
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
  auto op = std::make_unique<Op>();
  op->head = chain.head;
  op->type = h.type;
  op->sector = h.sector;
  uint8_t status = Plan(h.type, h.sector, in, out, data_in, data_out, *op);
  // The status byte is the chain's last writable byte.
  uint64_t skip = out.remaining() - 1;
  if (skip > 0) {
    // The request writes less than the driver offered (e.g. an error).
    RETURN_IF_ERROR(out.TakeIovecs(skip).status());
  }
  ASSIGN_OR_RETURN(std::vector<iovec> status_iov, out.TakeIovecs(1));
  op->status = static_cast<uint8_t*>(status_iov.front().iov_base);
  op->written = static_cast<uint32_t>(std::min<uint64_t>(out.written(), UINT32_MAX));
  if (status == kRun) status = backend_ ? TryInline(*op) : RunSync(*op);
  if (status != kRun) {
    *op->status = status;
    Account(*op, status);
    return op->written;
  }
  Submit(std::move(op));
  return kKeepChain;
}

bool Block::InRange(uint64_t sector, uint64_t bytes) const {
  uint64_t cap = capacity_sectors();
  return sector <= cap && bytes / kSectorSize <= cap - sector && bytes % kSectorSize == 0;
}

uint8_t Block::Plan(uint32_t type, uint64_t sector, ChainReader& in, ChainWriter& out,
                    uint64_t data_in, uint64_t data_out, Op& op) {
  switch (type) {
    case kBlkTIn:
      return PlanReadWrite(false, sector, in, out, data_out, op);
    case kBlkTOut:
      if (options_.read_only) return kBlkSIoErr;
      op.flush_after = write_through_;
      return PlanReadWrite(true, sector, in, out, data_in, op);
    case kBlkTFlush:
      op.requests.push_back(block::Request::Flush());
      return kRun;
    case kBlkTGetId: {
      if (data_out < kBlkIdBytes) return kBlkSIoErr;
      uint8_t id[kBlkIdBytes] = {};
      std::memcpy(id, options_.serial.data(), options_.serial.size());
      return out.Write(id).ok() ? kBlkSOk : kBlkSIoErr;
    }
    case kBlkTDiscard:
    case kBlkTWriteZeroes:
      if (options_.read_only) return kBlkSIoErr;
      op.flush_after = write_through_;
      return PlanDiscardOrZero(type == kBlkTWriteZeroes, in, data_in, op);
    default:
      return kBlkSUnsupp;
  }
}

uint8_t Block::PlanReadWrite(bool write, uint64_t sector, ChainReader& in, ChainWriter& out,
                             uint64_t len, Op& op) {
  if (!InRange(sector, len)) return kBlkSIoErr;
  if (len == 0) return kBlkSOk;
  absl::StatusOr<std::vector<iovec>> iov = write ? in.TakeIovecs(len) : out.TakeIovecs(len);
  if (!iov.ok()) return kBlkSIoErr;
  uint64_t offset = sector * kSectorSize;
  op.bytes = len;
  op.requests.push_back(write ? block::Request::WriteV(offset, std::move(*iov))
                              : block::Request::ReadV(offset, std::move(*iov)));
  return kRun;
}

uint8_t Block::PlanDiscardOrZero(bool zero, ChainReader& in, uint64_t len, Op& op) {
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
    op.requests.push_back(zero ? block::Request::WriteZeroes(offset, bytes)
                               : block::Request::Discard(offset, bytes));
  }
  return kRun;
}


void Block::Account(const Op& op, uint8_t status) {
  if (status != kBlkSOk) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  switch (op.type) {
    case kBlkTIn:
      read_ops_.fetch_add(1, std::memory_order_relaxed);
      read_bytes_.fetch_add(op.bytes, std::memory_order_relaxed);
      break;
    case kBlkTOut:
      write_ops_.fetch_add(1, std::memory_order_relaxed);
      write_bytes_.fetch_add(op.bytes, std::memory_order_relaxed);
      break;
    case kBlkTFlush: flush_ops_.fetch_add(1, std::memory_order_relaxed); break;
    case kBlkTDiscard: discard_ops_.fetch_add(1, std::memory_order_relaxed); break;
    case kBlkTWriteZeroes: write_zeroes_ops_.fetch_add(1, std::memory_order_relaxed); break;
    default: break;
  }
}

std::vector<std::pair<std::string, uint64_t>> Block::Counters() const {
  return {{"read_ops", read_ops_.load()},   {"read_bytes", read_bytes_.load()},
          {"write_ops", write_ops_.load()}, {"write_bytes", write_bytes_.load()},
          {"flush_ops", flush_ops_.load()}, {"discard_ops", discard_ops_.load()},
          {"write_zeroes_ops", write_zeroes_ops_.load()}, {"errors", errors_.load()}};
}

void Block::Report(const Op& op, const absl::Status& s) const {
  absl::FPrintF(stderr, "kindling: %s: request type %d at sector %d: %s\n", name(), op.type,
                op.sector, s.message());
}

uint8_t Block::RunSync(const Op& op) {
  for (const block::Request& r : op.requests) {
    absl::Status s = block::ExecuteOnImage(*image_, r);
    if (!s.ok()) {
      Report(op, s);
      return kBlkSIoErr;
    }
  }
  if (op.flush_after && !image_->Flush().ok()) return kBlkSIoErr;
  return kBlkSOk;
}

uint8_t Block::TryInline(const Op& op) {
  // Write-through and multi-segment requests always take the backend.
  if (op.flush_after || op.requests.size() != 1) return kRun;
  std::optional<absl::Status> s = backend_->TryWithoutBlocking(op.requests.front());
  if (!s) return kRun;
  if (!s->ok()) {
    Report(op, *s);
    return kBlkSIoErr;
  }
  return kBlkSOk;
}

void Block::Submit(std::unique_ptr<Op> op) {
  {
    absl::MutexLock l(&shared_->mu);
    ++shared_->in_flight;
  }
  {
    absl::MutexLock l(&op->mu);
    op->remaining = op->requests.size();
  }
  std::vector<block::Request> requests = std::move(op->requests);
  // One shared owner for the op until its last request completes.
  auto owner = std::make_shared<std::unique_ptr<Op>>(std::move(op));
  for (block::Request& r : requests) {
    backend_->Submit(std::move(r), [this, owner](absl::Status s) {
      std::unique_ptr<Op> finished;
      {
        Op& o = **owner;
        absl::MutexLock l(&o.mu);
        if (!s.ok() && o.result == kBlkSOk) {
          Report(o, s);
          o.result = kBlkSIoErr;
        }
        if (--o.remaining == 0) finished = std::move(*owner);
      }
      if (finished) AfterRequests(std::move(finished));
    });
  }
}

void Block::AfterRequests(std::unique_ptr<Op> op) {
  if (!op->flush_after || op->result != kBlkSOk) {
    Completed(std::move(op));
    return;
  }
  op->flush_after = false;
  auto owner = std::make_shared<std::unique_ptr<Op>>(std::move(op));
  backend_->Submit(block::Request::Flush(), [this, owner](absl::Status s) {
    if (!s.ok()) (*owner)->result = kBlkSIoErr;
    Completed(std::move(*owner));
  });
}

void Block::Completed(std::unique_ptr<Op> op) {
  // Posting under the lock: once Reset saw nothing in flight, nothing
  // posts for the old activation any more.
  absl::MutexLock l(&shared_->mu);
  shared_->done.push_back(std::move(op));
  --shared_->in_flight;
  if (shared_->finish_posted || !shared_->post) return;
  shared_->finish_posted = true;
  shared_->post([this] { return FinishCompleted(); });
}

absl::Status Block::FinishCompleted() {
  std::vector<std::unique_ptr<Op>> done;
  {
    absl::MutexLock l(&shared_->mu);
    done.swap(shared_->done);
    shared_->finish_posted = false;
  }
  if (done.empty() || ctx_.queues.empty()) return absl::OkStatus();
  Queue& q = ctx_.queues[0];
  if (!q.active()) return absl::OkStatus();
  for (const std::unique_ptr<Op>& op : done) {
    *op->status = op->result;
    Account(*op, op->result);
    RETURN_IF_ERROR(q.PushUsed(op->head, op->written));
  }
  if (q.NeedsInterrupt()) ctx_.interrupt->SignalQueue(0);
  return absl::OkStatus();
}

}  // namespace virtio
