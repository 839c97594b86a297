// Block: virtio-blk (virtio 1.2, 5.2) over a block::BlockBackend (io_uring
// or a thread pool, many requests in flight) or, simpler, a synchronous
// block::Image served on the device's event loop. Reads and writes go
// straight between guest memory and the image (iovecs, no bounce copy);
// FLUSH completes only after the image's Flush (fdatasync) returned, and a
// driver that does not negotiate FLUSH gets write-through.
//
//   ASSIGN_OR_RETURN(auto disk, block::OpenBackend("disk.img", {}));
//   auto blk = std::make_shared<Block>(std::move(disk), BlockOptions{.serial = "disk0"});
//
// With a backend, a request is parsed and bounded on the loop and, when
// its data is in the page cache, done right there without blocking
// (BlockBackend::TryWithoutBlocking); otherwise it is submitted and
// completed from the backend's thread through ActivateContext::post:
// the status byte, the used ring and the interrupt are touched on the loop
// only. Reset() waits for what is in flight (the guest's buffers are not
// written after the driver reset the device); so does the destructor,
// which runs on the loop thread or after the loop stopped.
#ifndef VIRTIO_BLOCK_H_
#define VIRTIO_BLOCK_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "block/backend.h"

#include "block/image.h"
#include "virtio/device.h"

namespace virtio {

// Feature bits (spec 5.2.3).
inline constexpr int kBlkFSizeMax = 1;
inline constexpr int kBlkFSegMax = 2;
inline constexpr int kBlkFRo = 5;
inline constexpr int kBlkFBlkSize = 6;
inline constexpr int kBlkFFlush = 9;
inline constexpr int kBlkFDiscard = 13;
inline constexpr int kBlkFWriteZeroes = 14;

// Request types and status values.
inline constexpr uint32_t kBlkTIn = 0;
inline constexpr uint32_t kBlkTOut = 1;
inline constexpr uint32_t kBlkTFlush = 4;
inline constexpr uint32_t kBlkTGetId = 8;
inline constexpr uint32_t kBlkTDiscard = 11;
inline constexpr uint32_t kBlkTWriteZeroes = 13;
inline constexpr uint8_t kBlkSOk = 0;
inline constexpr uint8_t kBlkSIoErr = 1;
inline constexpr uint8_t kBlkSUnsupp = 2;
inline constexpr uint32_t kBlkIdBytes = 20;

struct BlockOptions {
  bool read_only = false;
  std::string serial;  // GET_ID; up to 20 bytes are used
};

class Block : public VirtioDevice {
 public:
  static constexpr uint32_t kSectorSize = 512;
  static constexpr uint32_t kSegMax = 126;  // queue size 128 minus header and status
  static constexpr uint32_t kMaxDiscardSectors = 1u << 22;  // 2 GiB per segment
  static constexpr uint32_t kMaxDiscardSegments = 16;

  // Synchronous: every request runs on the device's loop thread.
  Block(std::unique_ptr<block::Image> image, BlockOptions options);
  // Asynchronous: up to a queue's worth of requests in flight.
  Block(std::unique_ptr<block::BlockBackend> backend, BlockOptions options);
  ~Block() override;

  DeviceType type() const override { return DeviceType::kBlock; }
  std::string name() const override;
  uint64_t features() const override;
  uint16_t num_queues() const override { return 1; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  absl::Status Activate(const ActivateContext& ctx) override;
  absl::Status ProcessQueue(uint16_t index) override;
  void Reset() override;

  uint64_t capacity_sectors() const { return size_ / kSectorSize; }
  // Requests submitted to the backend and not yet completed by it.
  size_t in_flight() const;
  // Done once the backend completed everything submitted; completions it
  // posted are returned to the driver here.
  absl::StatusOr<bool> Quiesce() override;
  // read_ops/read_bytes, write_ops/write_bytes, flush_ops, discard_ops,
  // write_zeroes_ops (completed successfully), errors (requests that got an
  // error or unsupported status).
  std::vector<std::pair<std::string, uint64_t>> Counters() const override;

 private:
  struct Op;
  struct Shared;

  // Serves one request; returns the bytes written into the chain, or
  // kKeepChain when it went to the backend. Errors the driver caused get a
  // status byte; only a broken chain is an error.
  absl::StatusOr<uint32_t> Serve(const DescriptorChain& chain);
  // Turns the request into backend requests in `op`; returns the status
  // when it is decided without I/O (errors, GET_ID), kRun otherwise.
  uint8_t Plan(uint32_t type, uint64_t sector, ChainReader& in, ChainWriter& out,
               uint64_t data_in, uint64_t data_out, Op& op);
  uint8_t PlanReadWrite(bool write, uint64_t sector, ChainReader& in, ChainWriter& out,
                        uint64_t len, Op& op);
  uint8_t PlanDiscardOrZero(bool zero, ChainReader& in, uint64_t len, Op& op);
  bool InRange(uint64_t sector, uint64_t bytes) const;
  uint8_t RunSync(const Op& op);
  // With a backend: the request done at once if that cannot block (data
  // in the page cache), kRun if it must be submitted.
  uint8_t TryInline(const Op& op);
  void Report(const Op& op, const absl::Status& s) const;
  // Counts a request finished with `status`.
  void Account(const Op& op, uint8_t status);
  void Submit(std::unique_ptr<Op> op);
  // Backend thread, when all of op's requests completed: the write-through
  // flush, if any, then Completed.
  void AfterRequests(std::unique_ptr<Op> op);
  // Backend thread: records the result, queues `op` for the loop.
  void Completed(std::unique_ptr<Op> op);
  // Loop thread: returns finished chains to the driver.
  absl::Status FinishCompleted();
  void WaitIdle();

  std::unique_ptr<block::Image> image_;           // synchronous, or
  std::unique_ptr<block::BlockBackend> backend_;  // asynchronous
  uint64_t size_ = 0;
  BlockOptions options_;
  ActivateContext ctx_;
  bool write_through_ = false;
  std::unique_ptr<Shared> shared_;  // what completions touch off the loop
  std::atomic<uint64_t> read_ops_{0}, read_bytes_{0}, write_ops_{0}, write_bytes_{0};
  std::atomic<uint64_t> flush_ops_{0}, discard_ops_{0}, write_zeroes_ops_{0}, errors_{0};
};

}  // namespace virtio

#endif  // VIRTIO_BLOCK_H_
