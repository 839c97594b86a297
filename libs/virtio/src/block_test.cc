#include "virtio/block.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "libs/virtio/src/test_env.h"
#include "libs/block/src/test_util.h"

namespace virtio {
namespace {

constexpr uint64_t kDiskBytes = 1 << 20;

struct BlockEnv {
  explicit BlockEnv(bool read_only = false, uint64_t features = 0)
      : env(16, features) {
    path = dir.Path("disk.img");
    block_test::WriteFile(path, block_test::Pattern(kDiskBytes, 7));
    block::OpenOptions o;
    o.format = "raw";
    o.read_only = read_only;
    auto img = block::OpenImage(path, o);
    REQUIRE(img.ok());
    blk = std::make_unique<Block>(std::move(*img), BlockOptions{read_only, "kindling-disk-0"});
    ActivateContext ctx{env.mem.get(), {&env.queue, 1}, &irq, features,
                        [this](uint16_t) { ++again; }};
    REQUIRE(blk->Activate(ctx).ok());
  }
  uint64_t header_at() const { return env.driver.scratch().value; }
  uint64_t data_at() const { return env.driver.scratch().value + 0x1000; }
  uint64_t status_at() const { return env.driver.scratch().value + 0x100; }
  // Submits header {type, sector} + data buffers + status; returns status.
  uint8_t Submit(uint32_t type, uint64_t sector, std::vector<testing::MockBuffer> data,
                 bool indirect = false) {
    uint32_t hdr[4] = {type, 0, static_cast<uint32_t>(sector), static_cast<uint32_t>(sector >> 32)};
    REQUIRE(env.mem->Write(GuestAddress(header_at()), {reinterpret_cast<uint8_t*>(hdr), 16}).ok());
    REQUIRE(env.mem->WriteObj<uint8_t>(GuestAddress(status_at()), 0xee).ok());
    std::vector<testing::MockBuffer> bufs = {{header_at(), 16, false}};
    bufs.insert(bufs.end(), data.begin(), data.end());
    bufs.push_back({status_at(), 1, true});
    uint16_t before = env.driver.used_idx();
    env.driver.AddChain(bufs, indirect);
    REQUIRE(blk->ProcessQueue(0).ok());
    REQUIRE(env.driver.used_idx() == static_cast<uint16_t>(before + 1));
    return env.mem->ReadObj<uint8_t>(GuestAddress(status_at())).value();
  }
  std::vector<uint8_t> FileBytes(uint64_t off, size_t n) {
    std::vector<uint8_t> out(n);
    int fd = ::open(path.c_str(), O_RDONLY);
    REQUIRE(::pread(fd, out.data(), n, off) == static_cast<ssize_t>(n));
    ::close(fd);
    return out;
  }
  std::vector<uint8_t> Guest(uint64_t addr, size_t n) {
    std::vector<uint8_t> out(n);
    REQUIRE(env.mem->Read(GuestAddress(addr), out).ok());
    return out;
  }

  block_test::TempDir dir;
  std::string path;
  test::QueueEnv env;
  test::CountingInterrupt irq;
  int again = 0;
  std::unique_ptr<Block> blk;
};

TEST_CASE("virtio-blk: config space") {
  BlockEnv b;
  uint64_t cap = 0;
  b.blk->ReadConfig(0, {reinterpret_cast<uint8_t*>(&cap), 8});
  REQUIRE(cap == kDiskBytes / 512);
  uint32_t blk_size = 0;
  b.blk->ReadConfig(20, {reinterpret_cast<uint8_t*>(&blk_size), 4});
  REQUIRE(blk_size == 512);
  REQUIRE((b.blk->features() & Bit(kBlkFFlush)) != 0);
  REQUIRE((b.blk->features() & Bit(kBlkFRo)) == 0);
}

TEST_CASE("virtio-blk: reads split across buffers land in guest memory") {
  BlockEnv b;
  REQUIRE(b.Submit(kBlkTIn, 3, {{b.data_at(), 512, true}, {b.data_at() + 8192, 1024, true}}) ==
          kBlkSOk);
  REQUIRE(b.Guest(b.data_at(), 512) == b.FileBytes(3 * 512, 512));
  REQUIRE(b.Guest(b.data_at() + 8192, 1024) == b.FileBytes(4 * 512, 1024));
  REQUIRE(b.env.driver.used(0).len == 1537);
  REQUIRE(b.irq.queue == 1);
}

TEST_CASE("virtio-blk: writes reach the file, through indirect tables too") {
  BlockEnv b(false, Bit(kFIndirectDesc));
  std::vector<uint8_t> data = block_test::Pattern(4096, 99);
  REQUIRE(b.env.mem->Write(GuestAddress(b.data_at()), data).ok());
  REQUIRE(b.Submit(kBlkTOut, 8, {{b.data_at(), 4096, false}}, true) == kBlkSOk);
  REQUIRE(b.Submit(kBlkTFlush, 0, {}) == kBlkSOk);
  REQUIRE(b.FileBytes(8 * 512, 4096) == data);
}

TEST_CASE("virtio-blk: GET_ID returns the serial, NUL padded") {
  BlockEnv b;
  REQUIRE(b.Submit(kBlkTGetId, 0, {{b.data_at(), 20, true}}) == kBlkSOk);
  auto id = b.Guest(b.data_at(), 20);
  REQUIRE(std::string(reinterpret_cast<char*>(id.data()), 15) == "kindling-disk-0");
  REQUIRE(id[15] == 0);
}

TEST_CASE("virtio-blk: out-of-range, partial-sector and unknown requests fail cleanly") {
  BlockEnv b;
  REQUIRE(b.Submit(kBlkTIn, kDiskBytes / 512, {{b.data_at(), 512, true}}) == kBlkSIoErr);
  REQUIRE(b.Submit(kBlkTIn, kDiskBytes / 512 - 1, {{b.data_at(), 1024, true}}) == kBlkSIoErr);
  REQUIRE(b.Submit(kBlkTIn, ~0ULL, {{b.data_at(), 512, true}}) == kBlkSIoErr);
  REQUIRE(b.Submit(kBlkTIn, 0, {{b.data_at(), 100, true}}) == kBlkSIoErr);
  REQUIRE(b.Submit(77, 0, {}) == kBlkSUnsupp);
  REQUIRE(b.Submit(kBlkTGetId, 0, {{b.data_at(), 4, true}}) == kBlkSIoErr);
}

TEST_CASE("virtio-blk: write zeroes and discard") {
  BlockEnv b;
  struct Seg {
    uint64_t sector;
    uint32_t n, flags;
  } seg{2, 4, 1};
  REQUIRE(b.env.mem->WriteObj(GuestAddress(b.data_at()), seg).ok());
  REQUIRE(b.Submit(kBlkTWriteZeroes, 0, {{b.data_at(), 16, false}}) == kBlkSOk);
  REQUIRE(b.FileBytes(2 * 512, 2048) == std::vector<uint8_t>(2048, 0));
  REQUIRE(b.FileBytes(6 * 512, 512) != std::vector<uint8_t>(512, 0));
  seg = {10, 2, 0};
  REQUIRE(b.env.mem->WriteObj(GuestAddress(b.data_at()), seg).ok());
  REQUIRE(b.Submit(kBlkTDiscard, 0, {{b.data_at(), 16, false}}) == kBlkSOk);
  seg = {kDiskBytes / 512 - 1, 2, 0};  // past the end
  REQUIRE(b.env.mem->WriteObj(GuestAddress(b.data_at()), seg).ok());
  REQUIRE(b.Submit(kBlkTDiscard, 0, {{b.data_at(), 16, false}}) == kBlkSIoErr);
  seg = {0, 1, 1};  // unmap is not a discard flag
  REQUIRE(b.env.mem->WriteObj(GuestAddress(b.data_at()), seg).ok());
  REQUIRE(b.Submit(kBlkTDiscard, 0, {{b.data_at(), 16, false}}) == kBlkSUnsupp);
}

TEST_CASE("virtio-blk: a read-only disk refuses writes and offers RO") {
  BlockEnv b(true);
  REQUIRE((b.blk->features() & Bit(kBlkFRo)) != 0);
  auto before = b.FileBytes(0, 512);
  REQUIRE(b.Submit(kBlkTOut, 0, {{b.data_at(), 512, false}}) == kBlkSIoErr);
  REQUIRE(b.FileBytes(0, 512) == before);
  REQUIRE(b.Submit(kBlkTIn, 0, {{b.data_at(), 512, true}}) == kBlkSOk);
}

TEST_CASE("virtio-blk: a request without header or status byte breaks the queue") {
  BlockEnv b;
  b.env.driver.AddChain({{b.data_at(), 8, false}});
  auto s = b.blk->ProcessQueue(0);
  REQUIRE_THAT(std::string(s.message()), Catch::Contains("no room for its header"));
}

TEST_CASE("virtio-blk: one call serves at most a queue's worth, then asks again") {
  BlockEnv b;
  for (int i = 0; i < 16; ++i) {
    uint32_t hdr[4] = {kBlkTFlush, 0, 0, 0};
    REQUIRE(b.env.mem->Write(GuestAddress(b.header_at()), {reinterpret_cast<uint8_t*>(hdr), 16}).ok());
    b.env.driver.AddChain({{b.header_at(), 16, false}, {b.status_at(), 1, true}});
  }
  REQUIRE(b.blk->ProcessQueue(0).ok());
  REQUIRE(b.env.driver.used_idx() == 16);
  REQUIRE(b.again == 1);
}

}  // namespace
}  // namespace virtio

namespace virtio {
namespace {

// An in-memory disk that counts flushes.
class CountingImage : public block::Image {
 public:
  std::string_view format() const override { return "test"; }
  uint64_t size() const override { return data_.size(); }
  block::Capabilities capabilities() const override { return {}; }
  absl::Status ReadV(uint64_t offset, std::span<const iovec> iov) override {
    for (const iovec& v : iov) {
      std::memcpy(v.iov_base, data_.data() + offset, v.iov_len);
      offset += v.iov_len;
    }
    return absl::OkStatus();
  }
  absl::Status WriteV(uint64_t offset, std::span<const iovec> iov) override {
    for (const iovec& v : iov) {
      std::memcpy(data_.data() + offset, v.iov_base, v.iov_len);
      offset += v.iov_len;
    }
    return absl::OkStatus();
  }
  absl::Status Flush() override {
    ++*flushes_;
    return absl::OkStatus();
  }
  absl::Status Discard(uint64_t, uint64_t) override { return absl::OkStatus(); }
  absl::Status WriteZeroes(uint64_t, uint64_t) override { return absl::OkStatus(); }
  std::shared_ptr<int> flushes_ = std::make_shared<int>(0);

 private:
  std::vector<uint8_t> data_ = std::vector<uint8_t>(64 * 1024);
};

TEST_CASE("virtio-blk: a driver without FLUSH gets write-through") {
  for (bool negotiated : {false, true}) {
    test::QueueEnv env;
    auto img = std::make_unique<CountingImage>();
    std::shared_ptr<int> flushes = img->flushes_;
    Block blk(std::move(img), {});
    test::CountingInterrupt irq;
    uint64_t features = negotiated ? Bit(kBlkFFlush) : 0;
    REQUIRE(blk.Activate({env.mem.get(), {&env.queue, 1}, &irq, features, [](uint16_t) {}}).ok());
    uint64_t s = env.driver.scratch().value;
    uint32_t hdr[4] = {kBlkTOut, 0, 1, 0};
    REQUIRE(env.mem->Write(GuestAddress(s), {reinterpret_cast<uint8_t*>(hdr), 16}).ok());
    env.driver.AddChain({{s, 16, false}, {s + 4096, 512, false}, {s + 256, 1, true}});
    REQUIRE(blk.ProcessQueue(0).ok());
    REQUIRE(env.mem->ReadObj<uint8_t>(GuestAddress(s + 256)).value() == kBlkSOk);
    REQUIRE(*flushes == (negotiated ? 0 : 1));
  }
}

}  // namespace
}  // namespace virtio
