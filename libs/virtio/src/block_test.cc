#include "virtio/block.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <mutex>
#include <thread>

#include "libs/virtio/src/test_env.h"
#include "libs/block/src/test_util.h"

namespace virtio {
namespace {

constexpr uint64_t kDiskBytes = 1 << 20;

// Collects what a device posts to its loop; the test runs it.
struct PostedWork {
  void Post(std::function<absl::Status()> fn) {
    std::lock_guard<std::mutex> l(mu);
    fns.push_back(std::move(fn));
  }
  // Runs what was posted so far; returns how many ran.
  size_t Run() {
    std::vector<std::function<absl::Status()>> now;
    {
      std::lock_guard<std::mutex> l(mu);
      now.swap(fns);
    }
    for (auto& fn : now) REQUIRE(fn().ok());
    return now.size();
  }
  std::mutex mu;
  std::vector<std::function<absl::Status()>> fns;
};

// A virtio-blk over a raw file: synchronous (Image) or asynchronous
// (BlockBackend, io_uring where the kernel has it).
struct BlockEnv {
  explicit BlockEnv(bool read_only = false, uint64_t features = 0, bool async = false,
                    std::string serial = "kindling-disk-0")
      : env(16, features) {
    path = dir.Path("disk.img");
    block_test::WriteFile(path, block_test::Pattern(kDiskBytes, 7));
    block::OpenOptions o;
    o.format = "raw";
    o.read_only = read_only;
    BlockOptions options{read_only, serial};
    if (async) {
      auto backend = block::OpenBackend(path, {.open = o, .threads = 2});
      REQUIRE(backend.ok());
      blk = std::make_unique<Block>(std::move(*backend), options);
    } else {
      auto img = block::OpenImage(path, o);
      REQUIRE(img.ok());
      blk = std::make_unique<Block>(std::move(*img), options);
    }
    ActivateContext ctx{env.mem.get(), {&env.queue, 1}, &irq, features,
                        [this](uint16_t) { ++again; }, nullptr,
                        [this](std::function<absl::Status()> fn) { posted.Post(std::move(fn)); }};
    REQUIRE(blk->Activate(ctx).ok());
  }
  // Waits for the backend, then returns the finished chains (the loop's part).
  void Settle() {
    for (int i = 0; i < 10000 && blk->in_flight() > 0; ++i) usleep(1000);
    REQUIRE(blk->in_flight() == 0);
    posted.Run();
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
    Settle();
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
  PostedWork posted;
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
  BlockEnv b(false, 0, GENERATE(false, true));
  REQUIRE(b.Submit(kBlkTIn, 3, {{b.data_at(), 512, true}, {b.data_at() + 8192, 1024, true}}) ==
          kBlkSOk);
  REQUIRE(b.Guest(b.data_at(), 512) == b.FileBytes(3 * 512, 512));
  REQUIRE(b.Guest(b.data_at() + 8192, 1024) == b.FileBytes(4 * 512, 1024));
  REQUIRE(b.env.driver.used(0).len == 1537);
  REQUIRE(b.irq.queue == 1);
}

TEST_CASE("virtio-blk: writes reach the file, through indirect tables too") {
  BlockEnv b(false, Bit(kFIndirectDesc), GENERATE(false, true));
  std::vector<uint8_t> data = block_test::Pattern(4096, 99);
  REQUIRE(b.env.mem->Write(GuestAddress(b.data_at()), data).ok());
  REQUIRE(b.Submit(kBlkTOut, 8, {{b.data_at(), 4096, false}}, true) == kBlkSOk);
  REQUIRE(b.Submit(kBlkTFlush, 0, {}) == kBlkSOk);
  REQUIRE(b.FileBytes(8 * 512, 4096) == data);
}

namespace {
uint64_t CounterOf(const VirtioDevice& d, const std::string& name) {
  for (const auto& [k, v] : d.Counters()) {
    if (k == name) return v;
  }
  FAIL("no counter " << name);
  return 0;
}
}  // namespace

TEST_CASE("virtio-blk: counters count completed requests, bytes and errors") {
  BlockEnv b(false, 0, GENERATE(false, true));
  REQUIRE(b.Submit(kBlkTIn, 3, {{b.data_at(), 512, true}, {b.data_at() + 8192, 1024, true}}) ==
          kBlkSOk);
  REQUIRE(b.Submit(kBlkTOut, 8, {{b.data_at(), 4096, false}}) == kBlkSOk);
  REQUIRE(b.Submit(kBlkTOut, 16, {{b.data_at(), 512, false}}) == kBlkSOk);
  REQUIRE(b.Submit(kBlkTFlush, 0, {}) == kBlkSOk);
  REQUIRE(b.Submit(kBlkTIn, kDiskBytes / 512, {{b.data_at(), 512, true}}) == kBlkSIoErr);
  REQUIRE(b.Submit(77, 0, {}) == kBlkSUnsupp);
  CHECK(CounterOf(*b.blk, "read_ops") == 1);
  CHECK(CounterOf(*b.blk, "read_bytes") == 1536);
  CHECK(CounterOf(*b.blk, "write_ops") == 2);
  CHECK(CounterOf(*b.blk, "write_bytes") == 4608);
  CHECK(CounterOf(*b.blk, "flush_ops") == 1);
  CHECK(CounterOf(*b.blk, "errors") == 2);
  CHECK(CounterOf(*b.blk, "discard_ops") == 0);
}

TEST_CASE("virtio-blk: GET_ID returns the serial, NUL padded") {
  BlockEnv b(false, 0, GENERATE(false, true));
  REQUIRE(b.Submit(kBlkTGetId, 0, {{b.data_at(), 20, true}}) == kBlkSOk);
  auto id = b.Guest(b.data_at(), 20);
  REQUIRE(std::string(reinterpret_cast<char*>(id.data()), 15) == "kindling-disk-0");
  REQUIRE(id[15] == 0);
}

TEST_CASE("virtio-blk: a serial longer than 20 bytes is cut to 20, without a NUL") {
  BlockEnv b(false, 0, GENERATE(false, true), "0123456789abcdefghijKLMNO");
  REQUIRE(b.Submit(kBlkTGetId, 0, {{b.data_at(), 24, true}}) == kBlkSOk);
  auto id = b.Guest(b.data_at(), 21);
  REQUIRE(std::string(reinterpret_cast<char*>(id.data()), 20) == "0123456789abcdefghij");
  REQUIRE(b.blk->name() == "virtio-blk 0123456789abcdefghij");
}

TEST_CASE("virtio-blk: out-of-range, partial-sector and unknown requests fail cleanly") {
  BlockEnv b(false, 0, GENERATE(false, true));
  REQUIRE(b.Submit(kBlkTIn, kDiskBytes / 512, {{b.data_at(), 512, true}}) == kBlkSIoErr);
  REQUIRE(b.Submit(kBlkTIn, kDiskBytes / 512 - 1, {{b.data_at(), 1024, true}}) == kBlkSIoErr);
  REQUIRE(b.Submit(kBlkTIn, ~0ULL, {{b.data_at(), 512, true}}) == kBlkSIoErr);
  REQUIRE(b.Submit(kBlkTIn, 0, {{b.data_at(), 100, true}}) == kBlkSIoErr);
  REQUIRE(b.Submit(77, 0, {}) == kBlkSUnsupp);
  REQUIRE(b.Submit(kBlkTGetId, 0, {{b.data_at(), 4, true}}) == kBlkSIoErr);
}

TEST_CASE("virtio-blk: write zeroes and discard") {
  BlockEnv b(false, 0, GENERATE(false, true));
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
  BlockEnv b(true, 0, GENERATE(false, true));
  REQUIRE((b.blk->features() & Bit(kBlkFRo)) != 0);
  auto before = b.FileBytes(0, 512);
  REQUIRE(b.Submit(kBlkTOut, 0, {{b.data_at(), 512, false}}) == kBlkSIoErr);
  REQUIRE(b.FileBytes(0, 512) == before);
  REQUIRE(b.Submit(kBlkTIn, 0, {{b.data_at(), 512, true}}) == kBlkSOk);
}

TEST_CASE("virtio-blk: a request without header or status byte breaks the queue") {
  BlockEnv b(false, 0, GENERATE(false, true));
  b.env.driver.AddChain({{b.data_at(), 8, false}});
  auto s = b.blk->ProcessQueue(0);
  REQUIRE_THAT(std::string(s.message()), Catch::Contains("no room for its header"));
}

TEST_CASE("virtio-blk: one call serves at most a queue's worth, then asks again") {
  BlockEnv b(false, 0, GENERATE(false, true));
  for (int i = 0; i < 16; ++i) {
    uint32_t hdr[4] = {kBlkTFlush, 0, 0, 0};
    REQUIRE(b.env.mem->Write(GuestAddress(b.header_at()), {reinterpret_cast<uint8_t*>(hdr), 16}).ok());
    b.env.driver.AddChain({{b.header_at(), 16, false}, {b.status_at(), 1, true}});
  }
  REQUIRE(b.blk->ProcessQueue(0).ok());
  b.Settle();
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


TEST_CASE("virtio-blk: a driver without FLUSH gets write-through, on a backend too") {
  for (bool negotiated : {false, true}) {
    test::QueueEnv env;
    auto img = std::make_unique<CountingImage>();
    std::shared_ptr<int> flushes = img->flushes_;
    Block blk(block::CreateThreadPoolBackend(std::move(img), 2), {});
    test::CountingInterrupt irq;
    PostedWork posted;
    uint64_t features = negotiated ? Bit(kBlkFFlush) : 0;
    REQUIRE(blk.Activate({env.mem.get(), {&env.queue, 1}, &irq, features, [](uint16_t) {},
                          nullptr, [&](auto fn) { posted.Post(std::move(fn)); }})
                .ok());
    uint64_t s = env.driver.scratch().value;
    uint32_t hdr[4] = {kBlkTOut, 0, 1, 0};
    REQUIRE(env.mem->Write(GuestAddress(s), {reinterpret_cast<uint8_t*>(hdr), 16}).ok());
    env.driver.AddChain({{s, 16, false}, {s + 4096, 512, false}, {s + 256, 1, true}});
    REQUIRE(blk.ProcessQueue(0).ok());
    for (int i = 0; i < 5000 && blk.in_flight() > 0; ++i) usleep(1000);
    REQUIRE(posted.Run() == 1);
    REQUIRE(env.driver.used_idx() == 1);
    REQUIRE(env.mem->ReadObj<uint8_t>(GuestAddress(s + 256)).value() == kBlkSOk);
    REQUIRE(*flushes == (negotiated ? 0 : 1));
  }
}

TEST_CASE("virtio-blk: a backend device refuses to start without a way to post completions") {
  test::QueueEnv env;
  Block blk(block::CreateThreadPoolBackend(std::make_unique<CountingImage>(), 1), {});
  test::CountingInterrupt irq;
  absl::Status s = blk.Activate({env.mem.get(), {&env.queue, 1}, &irq, 0, [](uint16_t) {}});
  REQUIRE_THAT(std::string(s.message()), Catch::Contains("ActivateContext::post"));
}

// A backend that holds every request until the test completes it, from a
// thread of the test's choosing (never inside Submit).
class HeldBackend : public block::BlockBackend {
 public:
  uint64_t size() const override { return 64 * 1024; }
  block::Capabilities capabilities() const override { return {}; }
  std::string_view engine() const override { return "held"; }
  block::BackendStats stats() const override { return {}; }
  void Submit(block::Request req, block::Completion done) override {
    std::lock_guard<std::mutex> l(mu_);
    held_.push_back({std::move(req), std::move(done)});
  }
  size_t held() {
    std::lock_guard<std::mutex> l(mu_);
    return held_.size();
  }
  // Completes request i (fills a read with `fill`) on a thread of its own.
  void Complete(size_t i, absl::Status status, uint8_t fill = 0) {
    block::Request req;
    block::Completion done;
    {
      std::lock_guard<std::mutex> l(mu_);
      req = held_[i].first;
      done = std::move(held_[i].second);
    }
    for (const iovec& v : req.iov) {
      if (req.type == block::RequestType::kRead) std::memset(v.iov_base, fill, v.iov_len);
    }
    std::thread([done = std::move(done), status] { done(status); }).join();
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<block::Request, block::Completion>> held_;
};

struct HeldEnv {
  HeldEnv() : env(16, 0) {
    auto b = std::make_unique<HeldBackend>();
    backend = b.get();
    blk = std::make_unique<Block>(std::move(b), BlockOptions{});
    REQUIRE(blk->Activate({env.mem.get(), {&env.queue, 1}, &irq, Bit(kBlkFFlush),
                           [](uint16_t) {}, nullptr,
                           [this](auto fn) { posted.Post(std::move(fn)); }})
                .ok());
  }
  // Queues a one-sector read of `sector` into data buffer i.
  uint16_t AddRead(uint64_t i) {
    uint64_t s = env.driver.scratch().value + i * 0x1000;
    uint32_t hdr[4] = {kBlkTIn, 0, static_cast<uint32_t>(i), 0};
    REQUIRE(env.mem->Write(GuestAddress(s), {reinterpret_cast<uint8_t*>(hdr), 16}).ok());
    REQUIRE(env.mem->WriteObj<uint8_t>(GuestAddress(s + 16), 0xee).ok());
    return env.driver.AddChain({{s, 16, false}, {s + 512, 512, true}, {s + 16, 1, true}});
  }
  uint8_t StatusOf(uint64_t i) {
    return env.mem->ReadObj<uint8_t>(GuestAddress(env.driver.scratch().value + i * 0x1000 + 16))
        .value();
  }
  uint8_t DataOf(uint64_t i) {
    return env.mem->ReadObj<uint8_t>(GuestAddress(env.driver.scratch().value + i * 0x1000 + 512))
        .value();
  }
  test::QueueEnv env;
  test::CountingInterrupt irq;
  PostedWork posted;
  HeldBackend* backend = nullptr;
  std::unique_ptr<Block> blk;
};

TEST_CASE("virtio-blk: requests are in flight together and complete out of order") {
  HeldEnv h;
  uint16_t heads[4];
  for (uint64_t i = 0; i < 4; ++i) heads[i] = h.AddRead(i);
  REQUIRE(h.blk->ProcessQueue(0).ok());
  // All four reached the backend before any completed.
  REQUIRE(h.backend->held() == 4);
  REQUIRE(h.blk->in_flight() == 4);
  REQUIRE(h.env.driver.used_idx() == 0);
  h.backend->Complete(2, absl::OkStatus(), 0x22);
  h.backend->Complete(0, absl::DataLossError("test"), 0x00);
  // Two completions, one trip to the loop, one interrupt.
  REQUIRE(h.posted.Run() == 1);
  REQUIRE(h.env.driver.used_idx() == 2);
  REQUIRE(h.env.driver.used(0).id == heads[2]);  // in the order they completed
  REQUIRE(h.env.driver.used(1).id == heads[0]);
  REQUIRE(h.env.driver.used(0).len == 513);
  REQUIRE(h.irq.queue == 1);
  REQUIRE(h.StatusOf(2) == kBlkSOk);
  REQUIRE(h.DataOf(2) == 0x22);
  REQUIRE(h.StatusOf(0) == kBlkSIoErr);
  REQUIRE(h.StatusOf(1) == 0xee);  // still the driver's byte
  h.backend->Complete(1, absl::OkStatus(), 0x11);
  h.backend->Complete(3, absl::OkStatus(), 0x33);
  REQUIRE(h.posted.Run() == 1);
  REQUIRE(h.env.driver.used_idx() == 4);
  REQUIRE(h.blk->in_flight() == 0);
  REQUIRE(h.DataOf(3) == 0x33);
}

TEST_CASE("virtio-blk: reset waits for requests in flight, then drops them") {
  HeldEnv h;
  h.AddRead(0);
  h.AddRead(1);
  REQUIRE(h.blk->ProcessQueue(0).ok());
  REQUIRE(h.backend->held() == 2);
  h.backend->Complete(0, absl::OkStatus(), 0x10);
  std::atomic<bool> reset_done{false};
  std::thread reset([&] {
    h.blk->Reset();
    reset_done = true;
  });
  usleep(50 * 1000);
  REQUIRE_FALSE(reset_done);  // request 1 is still in the guest's buffers
  h.backend->Complete(1, absl::OkStatus(), 0x11);
  reset.join();
  REQUIRE(reset_done);
  // What was posted before the reset finds nothing to return.
  h.posted.Run();
  REQUIRE(h.env.driver.used_idx() == 0);
  REQUIRE(h.blk->in_flight() == 0);
}
}  // namespace
}  // namespace virtio
