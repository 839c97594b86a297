// Block: virtio-blk (virtio 1.2, 5.2) over any block::Image (raw, qcow2,
// ...). Requests run on the device's event loop: reads and writes go
// straight between guest memory and the image (iovecs, no bounce copy);
// FLUSH completes only after the image's Flush (fdatasync) returned, and a
// driver that does not negotiate FLUSH gets write-through.
//
//   ASSIGN_OR_RETURN(auto img, block::OpenImage("disk.img", {}));
//   auto blk = std::make_shared<Block>(std::move(img), BlockOptions{.serial = "disk0"});
#ifndef VIRTIO_BLOCK_H_
#define VIRTIO_BLOCK_H_

#include <memory>
#include <string>

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

  Block(std::unique_ptr<block::Image> image, BlockOptions options);

  DeviceType type() const override { return DeviceType::kBlock; }
  std::string name() const override;
  uint64_t features() const override;
  uint16_t num_queues() const override { return 1; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  absl::Status Activate(const ActivateContext& ctx) override;
  absl::Status ProcessQueue(uint16_t index) override;
  void Reset() override { ctx_ = {}; }

  uint64_t capacity_sectors() const { return image_->size() / kSectorSize; }

 private:
  // Serves one request; returns the bytes written into the chain. Errors
  // the driver caused get a status byte; only a broken chain is an error.
  absl::StatusOr<uint32_t> Serve(const DescriptorChain& chain);
  uint8_t Execute(uint32_t type, uint64_t sector, ChainReader& in, ChainWriter& out,
                  uint64_t data_in, uint64_t data_out);
  uint8_t ReadWrite(bool write, uint64_t sector, ChainReader& in, ChainWriter& out,
                    uint64_t len);
  uint8_t DiscardOrZero(bool zero, ChainReader& in, uint64_t len);
  bool InRange(uint64_t sector, uint64_t bytes) const;
  // Flushes after a successful write when the driver did not take FLUSH.
  uint8_t Persist(uint8_t status);

  std::unique_ptr<block::Image> image_;
  BlockOptions options_;
  ActivateContext ctx_;
  bool write_through_ = false;
};

}  // namespace virtio

#endif  // VIRTIO_BLOCK_H_
