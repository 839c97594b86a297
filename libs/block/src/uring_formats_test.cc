// Every format on the io_uring engine: many requests in flight against a
// model of the disk, mapped requests on the ring and the rest on the pool,
// and the mapping lease that keeps a freed qcow2 cluster from being reused
// under a ring I/O.
#include <catch2/catch.hpp>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "block/backend.h"
#include "block/qcow2.h"
#include "block/qed.h"
#include "block/raw.h"
#include "block/vhd.h"
#include "kindling/status_macros.h"
#include "kindling/test_skip.h"
#include "libs/block/src/test_util.h"

using namespace block;
using block_test::HaveQemuImg;
using block_test::Pattern;
using block_test::Run;
using block_test::TempDir;
using block_test::WriteFile;

namespace {

// Page-aligned buffer (O_DIRECT needs it).
struct Buf {
  explicit Buf(size_t n) : len(n) {
    void* p = nullptr;
    REQUIRE(posix_memalign(&p, 4096, n ? n : 1) == 0);
    mem.reset(static_cast<uint8_t*>(p));
  }
  struct Free {
    void operator()(uint8_t* p) const { free(p); }
  };
  std::unique_ptr<uint8_t[], Free> mem;
  size_t len;
};

// Submits requests and waits for all of them; counts failures.
class Batch {
 public:
  explicit Batch(BlockBackend& b) : b_(b) {}
  void Submit(Request req) {
    {
      std::lock_guard<std::mutex> l(mu_);
      ++inflight_;
    }
    b_.Submit(std::move(req), [this](absl::Status s) {
      std::lock_guard<std::mutex> l(mu_);
      if (!s.ok() && first_error_.ok()) first_error_ = s;
      --inflight_;
      cv_.notify_all();
    });
  }
  absl::Status Wait() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return inflight_ == 0; });
    return std::exchange(first_error_, absl::OkStatus());
  }

 private:
  BlockBackend& b_;
  std::mutex mu_;
  std::condition_variable cv_;
  int inflight_ = 0;
  absl::Status first_error_;
};

struct Case {
  std::string name;
  std::string file;
  std::function<absl::Status(const std::string&, uint64_t)> create;
  bool backed = false;  // on base.raw, which holds Pattern(size, 7)
};

constexpr uint64_t kSize = 8 << 20;
constexpr uint64_t kSlot = 64 << 10;  // writes, zeroes and discards stay in one

std::vector<Case> Cases() {
  return {
      {"raw", "d.raw", [](auto& p, uint64_t s) { return RawImage::Create(p, s); }},
      {"qcow2 4k", "d.qcow2",
       [](auto& p, uint64_t s) {
         return Qcow2Image::Create(p, {.size = s, .cluster_size = 4096});
       }},
      {"qcow2 64k on raw", "d.qcow2",
       [](auto& p, uint64_t s) {
         return Qcow2Image::Create(
             p, {.size = s, .backing_file = "base.raw", .backing_format = "raw"});
       },
       true},
      {"qed on raw", "d.qed",
       [](auto& p, uint64_t s) {
         return QedImage::Create(p, {.size = s, .cluster_size = 4096,
                                     .backing_file = "base.raw",
                                     .backing_format = "raw"});
       },
       true},
      {"vhd dynamic", "d.vhd",
       [](auto& p, uint64_t s) {
         return VhdImage::Create(p, {.size = s, .block_size = 512 << 10});
       }},
      {"vhd differencing", "d.vhd",
       [](auto& p, uint64_t s) -> absl::Status {
         // The parent: a dynamic VHD holding base.raw's bytes.
         const std::string dir = p.substr(0, p.rfind('/') + 1);
         RETURN_IF_ERROR(VhdImage::Create(dir + "parent.vhd", {.size = s}));
         ASSIGN_OR_RETURN(auto parent, OpenImage(dir + "parent.vhd", {}));
         ASSIGN_OR_RETURN(auto raw, OpenImage(dir + "base.raw", {.read_only = true}));
         std::vector<uint8_t> buf(s);
         RETURN_IF_ERROR(raw->Read(0, buf.data(), s));
         RETURN_IF_ERROR(parent->Write(0, buf.data(), s));
         return VhdImage::Create(p, {.block_size = 512 << 10, .parent = "parent.vhd"});
       },
       true},
      {"vhd fixed", "d.vhd",
       [](auto& p, uint64_t s) { return VhdImage::Create(p, {.size = s, .fixed = true}); }},
  };
}

// Rounds of writes (disjoint slots), zeroes and discards in flight together
// with reads of slots nobody changes this round; the reads are checked
// against the model when they complete, the whole disk after each round.
void Exercise(BlockBackend& b, std::vector<uint8_t>& model, bool direct,
              bool discard_zeroes) {
  std::mt19937_64 rng(direct ? 11 : 12);
  const uint64_t unit = direct ? 4096 : 512;
  const uint64_t slots = kSize / kSlot;
  for (int round = 0; round < 4; ++round) {
    INFO("round " << round);
    std::vector<uint64_t> order(slots);
    for (uint64_t i = 0; i < slots; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    Batch batch(b);
    std::vector<std::unique_ptr<Buf>> keep;
    std::vector<std::tuple<uint64_t, Buf*>> reads;
    for (uint64_t slot : order) {
      const uint64_t base = slot * kSlot;
      const uint64_t off = base + (rng() % (kSlot / unit / 2)) * unit;
      const uint64_t len = (1 + rng() % (kSlot / unit / 2)) * unit;
      const int what = rng() % 10;
      if (what < 5) {
        auto d = Pattern(len, rng());
        keep.push_back(std::make_unique<Buf>(len));
        memcpy(keep.back()->mem.get(), d.data(), len);
        memcpy(&model[off], d.data(), len);
        batch.Submit(Request::Write(off, keep.back()->mem.get(), len));
      } else if (what == 5) {
        batch.Submit(Request::WriteZeroes(off, len));
        memset(&model[off], 0, len);
      } else if (what == 6 && discard_zeroes) {
        batch.Submit(Request::Discard(base, kSlot));  // whole clusters
        memset(&model[base], 0, kSlot);
      } else {
        keep.push_back(std::make_unique<Buf>(len));
        reads.emplace_back(off, keep.back().get());
        batch.Submit(Request::Read(off, keep.back()->mem.get(), len));
      }
      if (slot % 16 == 0) batch.Submit(Request::Flush());
    }
    REQUIRE(batch.Wait().ok());
    for (auto& [off, buf] : reads) {
      INFO("read at 0x" << std::hex << off);
      REQUIRE(memcmp(buf->mem.get(), &model[off], buf->len) == 0);
    }
    Buf all(kSize);
    SyncBackend sync(b);
    REQUIRE(sync.Flush().ok());
    REQUIRE(sync.Read(0, all.mem.get(), kSize).ok());
    REQUIRE(memcmp(all.mem.get(), model.data(), kSize) == 0);
  }
}

}  // namespace

TEST_CASE("every format on io_uring: ring and pool together agree with a model") {
  if (!IoUringAvailable()) KINDLING_SKIP("io_uring is not available here");
  TempDir dir;
  const auto base = Pattern(kSize, 7);
  WriteFile(dir.Path("base.raw"), base);
  for (const Case& c : Cases()) {
    for (bool direct : {false, true}) {
      INFO(c.name << (direct ? ", cache=none" : ""));
      const std::string path = dir.Path(c.file);
      REQUIRE(c.create(path, kSize).ok());
      std::vector<uint8_t> model = c.backed ? base : std::vector<uint8_t>(kSize, 0);
      // Discard only where it is known to read back zeros afterwards.
      const bool discard_zeroes = c.name == "raw" || c.name == "qcow2 4k";
      {
        BackendOptions opts;
        opts.engine = Engine::kIoUring;
        opts.queue_depth = 16;  // smaller than a round: requests queue for room
        opts.threads = 4;
        opts.open.direct = direct;
        auto b = OpenBackend(path, opts);
        REQUIRE(b.ok());
        REQUIRE((*b)->engine() == "io_uring");
        Exercise(**b, model, direct, discard_zeroes);
        const BackendStats st = (*b)->stats();
        INFO("direct " << st.direct_requests << ", pool " << st.pool_requests);
        REQUIRE(st.direct_requests > 0);
        REQUIRE(st.pool_requests > 0);  // flushes at least
        // Quiet, with every table cached: each read maps (the first may
        // load a table), and they come back right.
        const uint64_t chunk = 64 << 10, chunks = kSize / chunk;
        Buf out(chunk);
        SyncBackend sync(**b);
        for (uint64_t i = 0; i < chunks; ++i) {
          REQUIRE(sync.Read(i * chunk, out.mem.get(), chunk).ok());
          REQUIRE(memcmp(out.mem.get(), &model[i * chunk], chunk) == 0);
        }
        REQUIRE((*b)->stats().direct_requests - st.direct_requests >= chunks - 1);
      }
      if (kindling_test::Installed(HaveQemuImg(), "qemu-img", "qemu-img cross-check")) {
        WriteFile(dir.Path("model.raw"), model);
        const std::string fmt = c.file.substr(c.file.rfind('.') + 1) == "vhd"
                                    ? "vpc"
                                    : c.file.substr(c.file.rfind('.') + 1);
        if (fmt == "qcow2" || fmt == "qed") {
          auto chk = Run("qemu-img check " + path);
          INFO(chk.output);
          REQUIRE(chk.exit_code == 0);
        }
        if (c.name == "vhd differencing") continue;  // QEMU cannot open those
        auto cmp = Run("qemu-img compare -f " + fmt + " -F raw " + path + " " +
                       dir.Path("model.raw"));
        INFO(cmp.output);
        REQUIRE(cmp.exit_code == 0);
      }
    }
  }
}

TEST_CASE("io_uring: a qcow2 overlay on a compressed base reads through both paths") {
  if (!IoUringAvailable()) KINDLING_SKIP("io_uring is not available here");
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuImg(), "qemu-img");
  TempDir dir;
  const uint64_t size = 2 << 20;
  std::vector<uint8_t> data(size);  // compressible: a cluster repeats 16 bytes
  for (uint64_t i = 0; i < size; ++i) data[i] = uint8_t((i >> 16) * 31 + i % 16);
  memset(data.data() + (1 << 20), 0, 256 << 10);  // a stretch of zeros
  WriteFile(dir.Path("src.raw"), data);
  // Half the base compressed (the pool reads it), half plain (the ring does).
  auto r = Run("qemu-img convert -c -O qcow2 " + dir.Path("src.raw") + " " +
               dir.Path("base.qcow2") + " && qemu-io -c 'write -P 0x5a 0 512k' " +
               dir.Path("base.qcow2"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  memset(data.data(), 0x5a, 512 << 10);
  REQUIRE(Qcow2Image::Create(dir.Path("top.qcow2"),
                             {.size = size, .backing_file = "base.qcow2",
                              .backing_format = "qcow2"}).ok());
  BackendOptions opts;
  opts.engine = Engine::kIoUring;
  auto b = OpenBackend(dir.Path("top.qcow2"), opts);
  REQUIRE(b.ok());
  SyncBackend sync(**b);
  std::vector<uint8_t> out(size);
  for (int pass = 0; pass < 2; ++pass) {  // the second finds the tables cached
    for (uint64_t off = 0; off < size; off += 64 << 10) {
      REQUIRE(sync.Read(off, out.data() + off, 64 << 10).ok());
    }
    REQUIRE(out == data);
  }
  const BackendStats st = (*b)->stats();
  INFO("direct " << st.direct_requests << ", pool " << st.pool_requests);
  REQUIRE(st.direct_requests >= 8);  // the plain 512 KiB, second pass
  REQUIRE(st.pool_requests >= 16);   // the compressed clusters, every pass
}

// Each 8-byte word a writer stores says which guest offset it belongs to. A
// ring read mapped onto a cluster that a discard freed and a write reused
// would return words of another offset; a ring write there would plant them.
TEST_CASE("io_uring qcow2: discards racing ring I/O never mix up offsets") {
  if (!IoUringAvailable()) KINDLING_SKIP("io_uring is not available here");
  TempDir dir;
  const uint64_t cs = 4096, clusters = 64, size = cs * clusters;
  const std::string path = dir.Path("race.qcow2");
  REQUIRE(Qcow2Image::Create(path, {.size = size, .cluster_size = cs}).ok());
  BackendOptions opts;
  opts.engine = Engine::kIoUring;
  opts.threads = 4;
  auto b = OpenBackend(path, opts);
  REQUIRE(b.ok());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0}, reads{0}, errors{0};  // Catch2 is not thread-safe
  auto stamp = [](uint64_t word_off, uint64_t gen) { return word_off | (gen << 40); };
  auto writer = [&](int seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint64_t> buf(cs / 8);
    Batch batch(**b);
    for (uint64_t gen = 1; !stop; ++gen) {
      const uint64_t c = rng() % clusters;
      if (rng() % 4 == 0) {
        batch.Submit(Request::Discard(c * cs, cs));
        batch.Submit(Request::Flush());  // frees the cluster for reuse
      } else {
        for (uint64_t i = 0; i < buf.size(); ++i) buf[i] = stamp(c * cs + i * 8, gen);
        batch.Submit(Request::Write(c * cs, buf.data(), cs));
      }
      if (!batch.Wait().ok()) ++errors;
    }
  };
  auto reader = [&](int seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint64_t> buf(cs / 8);
    Batch batch(**b);
    while (!stop) {
      const uint64_t c = rng() % clusters;
      batch.Submit(Request::Read(c * cs, buf.data(), cs));
      if (!batch.Wait().ok()) ++errors;
      for (uint64_t i = 0; i < buf.size(); ++i) {
        const uint64_t want = c * cs + i * 8;
        if (buf[i] != 0 && (buf[i] & ((1ULL << 40) - 1)) != want) ++bad;
      }
      ++reads;
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) threads.emplace_back(writer, i);
  for (int i = 0; i < 2; ++i) threads.emplace_back(reader, 100 + i);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  stop = true;
  for (auto& t : threads) t.join();
  INFO(reads.load() << " reads; direct " << (*b)->stats().direct_requests);
  REQUIRE(reads > 100);
  REQUIRE((*b)->stats().direct_requests > 50);
  REQUIRE(errors == 0);
  REQUIRE(bad == 0);
  b->reset();
  if (kindling_test::Installed(HaveQemuImg(), "qemu-img", "qemu-img cross-check")) {
    auto chk = Run("qemu-img check " + path);
    INFO(chk.output);
    REQUIRE(chk.exit_code == 0);
  }
}
