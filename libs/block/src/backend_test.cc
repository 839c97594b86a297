#include "block/backend.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <cstring>
#include <mutex>
#include <condition_variable>
#include <random>

#include "block/raw.h"
#include "kindling/test_skip.h"
#include "libs/block/src/test_util.h"

using namespace block;
using block_test::Pattern;
using block_test::TempDir;

namespace {

// Drives many concurrent requests against `b` and a model of the disk.
void Exercise(BlockBackend& b, bool aligned) {
  const uint64_t size = b.size();
  std::vector<uint8_t> model(size, 0);
  std::mt19937_64 rng(42);
  const uint64_t unit = aligned ? 4096 : 512;
  struct Pending {
    std::vector<uint8_t> buf;
  };
  std::mutex mu;
  std::condition_variable cv;
  int inflight = 0;
  int failures = 0;
  std::vector<std::unique_ptr<uint8_t[], decltype(&free)>> keep;
  // Writes to disjoint slots so their order does not matter.
  const uint64_t slots = size / (16 * unit);
  std::vector<uint64_t> order(slots);
  for (uint64_t i = 0; i < slots; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  for (uint64_t slot : order) {
    uint64_t off = slot * 16 * unit + (rng() % 8) * unit;
    uint64_t len = (1 + rng() % 8) * unit;
    void* mem = nullptr;
    REQUIRE(posix_memalign(&mem, 4096, len) == 0);
    auto data = Pattern(len, off);
    memcpy(mem, data.data(), len);
    memcpy(&model[off], data.data(), len);
    keep.emplace_back(static_cast<uint8_t*>(mem), &free);
    {
      std::lock_guard<std::mutex> l(mu);
      ++inflight;
    }
    b.Submit(Request::Write(off, mem, len), [&](absl::Status s) {
      std::lock_guard<std::mutex> l(mu);
      if (!s.ok()) ++failures;
      --inflight;
      cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return inflight == 0; });
  }
  REQUIRE(failures == 0);
  SyncBackend sync(b);
  REQUIRE(sync.Flush().ok());
  REQUIRE(sync.WriteZeroes(0, 8 * unit).ok());
  memset(&model[0], 0, 8 * unit);
  REQUIRE(sync.Discard(size - 64 * 1024, 64 * 1024).ok());  // raw: holes read 0
  memset(&model[size - 64 * 1024], 0, 64 * 1024);
  void* back = nullptr;
  REQUIRE(posix_memalign(&back, 4096, size) == 0);
  REQUIRE(sync.Read(0, back, size).ok());
  REQUIRE(memcmp(back, model.data(), size) == 0);
  free(back);
}

}  // namespace

TEST_CASE("io_uring backend: concurrent writes, flush, zeroes, discard") {
  if (!IoUringAvailable()) KINDLING_SKIP("io_uring is not available");
  TempDir dir;
  const std::string path = dir.Path("disk.raw");
  for (bool direct : {false, true}) {
    REQUIRE(RawImage::Create(path, 4 << 20).ok());
    BackendOptions opts;
    opts.engine = Engine::kIoUring;
    opts.queue_depth = 8;  // smaller than the burst: exercises queueing
    opts.open.direct = direct;
    auto b = OpenBackend(path, opts);
    REQUIRE(b.ok());
    REQUIRE((*b)->engine() == "io_uring");
    Exercise(**b, direct);
  }
}

TEST_CASE("thread-pool backend runs the same workload") {
  TempDir dir;
  const std::string path = dir.Path("disk.raw");
  REQUIRE(RawImage::Create(path, 4 << 20).ok());
  BackendOptions opts;
  opts.engine = Engine::kThreads;
  opts.threads = 4;
  auto b = OpenBackend(path, opts);
  REQUIRE(b.ok());
  REQUIRE((*b)->engine() == "threads");
  Exercise(**b, false);
}

// Opens `path` on each engine in turn (SKIP for io_uring where the kernel
// has none) and hands the backend to `test`.
void ForEachEngine(const std::string& path, bool read_only,
                   const std::function<void(BlockBackend&)>& test) {
  for (Engine e : {Engine::kThreads, Engine::kIoUring}) {
    if (e == Engine::kIoUring && !IoUringAvailable()) {
      kindling_test::PrintSkip("io_uring is not available: its engine not run");
      continue;
    }
    BackendOptions opts;
    opts.engine = e;
    opts.open.read_only = read_only;
    auto b = OpenBackend(path, opts);
    REQUIRE(b.ok());
    test(**b);
  }
}

TEST_CASE("backends do cached reads and buffered writes at once, the rest they leave to Submit") {
  TempDir dir;
  const std::string path = dir.Path("disk.raw");
  REQUIRE(RawImage::Create(path, 1 << 20).ok());
  ForEachEngine(path, false, [](BlockBackend& b) {
    std::vector<char> data(8192, 'k'), back(8192, 0);
    // A buffered write into an allocated raw file goes straight to the page
    // cache (RWF_NOWAIT, or plain where ext4 refuses NOWAIT writes).
    std::optional<absl::Status> w =
        b.TryWithoutBlocking(Request::Write(4096, data.data(), data.size()));
    REQUIRE(w.has_value());
    REQUIRE(w->ok());
    // The page was just written: it is cached, the read cannot block.
    std::optional<absl::Status> r =
        b.TryWithoutBlocking(Request::Read(4096, back.data(), back.size()));
    REQUIRE(r.has_value());
    REQUIRE(r->ok());
    REQUIRE(back == data);
    REQUIRE(b.stats().inline_requests == 2);
    // Not reads or writes, or bad ones: Submit's to run and report.
    REQUIRE_FALSE(b.TryWithoutBlocking(Request::Flush()).has_value());
    REQUIRE_FALSE(b.TryWithoutBlocking(Request::Discard(0, 4096)).has_value());
    REQUIRE_FALSE(
        b.TryWithoutBlocking(Request::Read((1 << 20) - 256, back.data(), 512)).has_value());
    REQUIRE(b.stats().inline_requests == 2);
  });
}

TEST_CASE("backends reject requests outside the disk, in the callback") {
  TempDir dir;
  const std::string path = dir.Path("disk.raw");
  REQUIRE(RawImage::Create(path, 1 << 20).ok());
  ForEachEngine(path, false, [](BlockBackend& b) {
    SyncBackend sync(b);
    char buf[512];
    absl::Status s = sync.Read((1 << 20) - 256, buf, sizeof buf);
    REQUIRE(absl::IsOutOfRange(s));
    REQUIRE(absl::IsOutOfRange(sync.Discard(1 << 20, 1)));
    REQUIRE(absl::IsOutOfRange(sync.Write(~0ULL - 10, buf, sizeof buf)));
  });
}

TEST_CASE("read-only backends refuse writes") {
  TempDir dir;
  const std::string path = dir.Path("disk.raw");
  REQUIRE(RawImage::Create(path, 1 << 20).ok());
  ForEachEngine(path, true, [](BlockBackend& b) {
    REQUIRE(b.capabilities().read_only);
    SyncBackend sync(b);
    char buf[512] = {};
    REQUIRE_FALSE(sync.Write(0, buf, sizeof buf).ok());
  });
}
