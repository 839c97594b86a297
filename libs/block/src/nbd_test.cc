// NBD client against qemu-nbd on a unix socket (and TCP loopback).
#include "block/nbd.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <condition_variable>
#include <mutex>
#include <random>

#include "block/backend.h"
#include "block/raw.h"
#include "kindling/test_skip.h"
#include "libs/block/src/test_util.h"

using namespace block;
using block_test::Pattern;
using block_test::Run;
using block_test::TempDir;

namespace {

bool HaveQemuNbd() { return Run("qemu-nbd --version").exit_code == 0; }

// Runs qemu-nbd with `args` until destroyed.
class QemuNbd {
 public:
  explicit QemuNbd(std::vector<std::string> args) {
    pid_ = fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>("qemu-nbd"));
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execvp("qemu-nbd", argv.data());
      _exit(127);
    }
  }
  ~QemuNbd() {
    kill(pid_, SIGTERM);
    int st;
    waitpid(pid_, &st, 0);
  }

 private:
  pid_t pid_;
};

absl::StatusOr<std::unique_ptr<NbdImage>> ConnectRetry(const std::string& addr,
                                                       NbdOptions o = {}) {
  absl::StatusOr<std::unique_ptr<NbdImage>> n = absl::UnavailableError("not yet");
  for (int i = 0; i < 100 && !n.ok(); ++i) {
    n = NbdImage::Connect(addr, o);
    if (!n.ok()) usleep(50000);
  }
  return n;
}

std::vector<uint8_t> Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), {});
}

}  // namespace

TEST_CASE("NBD client reads and writes a qemu-nbd export over a unix socket") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuNbd(), "qemu-nbd (qemu-utils)");
  TempDir dir;
  // Unix socket paths must be short: not under the sandbox's deep TMPDIR.
  char sdir[] = "/tmp/nbdXXXXXX";
  REQUIRE(mkdtemp(sdir) != nullptr);
  const std::string img = dir.Path("disk.raw"), sock = std::string(sdir) + "/s";
  const uint64_t size = 8 << 20;
  REQUIRE(RawImage::Create(img, size).ok());
  std::vector<uint8_t> model(size, 0);
  for (bool structured : {true, false}) {
    INFO("structured " << structured);
    unlink(sock.c_str());
    QemuNbd server({"-f", "raw", "-k", sock, "-x", "exp", "-t", "--discard=unmap", img});
    auto n = ConnectRetry("nbd+unix:///exp?socket=" + sock, {.structured_replies = structured});
    INFO(n.status().ToString());
    REQUIRE(n.ok());
    NbdImage& d = **n;
    REQUIRE(d.size() == size);
    REQUIRE(d.structured() == structured);
    std::mt19937_64 rng(structured);
    for (int i = 0; i < 200; ++i) {
      uint64_t len = 1 + rng() % 200000;
      uint64_t off = rng() % (size - len);
      int what = rng() % 8;
      if (what < 5) {
        auto p = Pattern(len, rng());
        REQUIRE(d.Write(off, p.data(), len).ok());
        memcpy(&model[off], p.data(), len);
      } else if (what == 5) {
        REQUIRE(d.WriteZeroes(off, len).ok());
        memset(&model[off], 0, len);
      } else {
        std::vector<uint8_t> back(len);
        REQUIRE(d.Read(off, back.data(), len).ok());
        REQUIRE(memcmp(back.data(), &model[off], len) == 0);
      }
    }
    REQUIRE(d.Flush().ok());
    std::vector<uint8_t> all(size);
    REQUIRE(d.Read(0, all.data(), size).ok());  // > one request: split
    REQUIRE((all == model));
    // Trim: the bytes read back as before or zero (qemu-nbd unmaps).
    REQUIRE(d.Discard(1 << 20, 1 << 20).ok());
    std::vector<uint8_t> t(1 << 20);
    REQUIRE(d.Read(1 << 20, t.data(), t.size()).ok());
    memcpy(&model[1 << 20], t.data(), t.size());
    std::vector<char> buf(512);
    REQUIRE(absl::IsOutOfRange(d.Read(size - 100, buf.data(), 512)));
  }
  REQUIRE((Slurp(img) == model));
  unlink(sock.c_str());
  rmdir(sdir);
}

TEST_CASE("NBD client over TCP, read-only exports and unknown exports") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuNbd(), "qemu-nbd (qemu-utils)");
  TempDir dir;
  const std::string img = dir.Path("ro.raw");
  auto data = Pattern(1 << 20, 8);
  {
    std::ofstream f(img, std::ios::binary);
    f.write(reinterpret_cast<const char*>(data.data()), data.size());
  }
  const std::string port = std::to_string(20000 + getpid() % 20000);
  QemuNbd server({"-f", "raw", "-b", "127.0.0.1", "-p", port, "-x", "ro", "-r", "-t", "-e", "4", img});
  auto n = ConnectRetry("nbd://127.0.0.1:" + port + "/ro");
  INFO(n.status().ToString());
  REQUIRE(n.ok());
  REQUIRE((*n)->capabilities().read_only);
  std::vector<uint8_t> back(1 << 20);
  REQUIRE((*n)->Read(0, back.data(), back.size()).ok());
  REQUIRE((back == data));
  REQUIRE(absl::IsPermissionDenied((*n)->Write(0, back.data(), 512)));
  // Through OpenImage, as a backing file would be opened.
  auto img2 = OpenImage("nbd:127.0.0.1:" + port + ":exportname=ro", {.read_only = true});
  REQUIRE(img2.ok());
  REQUIRE((*img2)->format() == "nbd");
  auto bad = NbdImage::Connect("nbd://127.0.0.1:" + port + "/nope", {});
  REQUIRE_FALSE(bad.ok());
  INFO(bad.status().ToString());
  REQUIRE(bad.status().message().find("nope") != std::string::npos);
}

TEST_CASE("NBD client refuses a server that is not NBD, without hanging") {
  TempDir dir;
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  const char junk[] = "HTTP/1.1 200 OK\r\n\r\n";
  REQUIRE(write(sv[1], junk, sizeof junk) > 0);
  auto n = NbdImage::FromSocket(sv[0], "junk", "", {.timeout_s = 1});
  REQUIRE_FALSE(n.ok());
  close(sv[1]);
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  auto q = NbdImage::FromSocket(sv[0], "quiet", "", {.timeout_s = 1});  // says nothing
  REQUIRE_FALSE(q.ok());
  REQUIRE(absl::IsDeadlineExceeded(q.status()));
  close(sv[1]);
}

TEST_CASE("NBD requests from many threads are pipelined on one connection") {
  KINDLING_SKIP_UNLESS_INSTALLED(HaveQemuNbd(), "qemu-nbd (qemu-utils)");
  TempDir dir;
  char sdir[] = "/tmp/nbdXXXXXX";
  REQUIRE(mkdtemp(sdir) != nullptr);
  const std::string img = dir.Path("p.raw"), sock = std::string(sdir) + "/s";
  const uint64_t size = 4 << 20;
  REQUIRE(RawImage::Create(img, size).ok());
  std::vector<uint8_t> model(size, 0);
  {
    QemuNbd server({"-f", "raw", "-k", sock, "-x", "", "-t", img});
    absl::StatusOr<std::unique_ptr<BlockBackend>> b = absl::UnavailableError("");
    for (int i = 0; i < 100 && !b.ok(); ++i) {
      BackendOptions bo;
      bo.threads = 8;
      b = OpenBackend("nbd+unix:///?socket=" + sock, bo);
      if (!b.ok()) usleep(50000);
    }
    INFO(b.status().ToString());
    REQUIRE(b.ok());
    std::mutex mu;
    std::condition_variable cv;
    int inflight = 0, failed = 0;
    std::vector<std::vector<uint8_t>> bufs;
    bufs.reserve(size / 16384);
    for (uint64_t off = 0; off < size; off += 16384) {
      bufs.push_back(Pattern(8192, off));
      memcpy(&model[off], bufs.back().data(), 8192);
      {
        std::lock_guard<std::mutex> l(mu);
        ++inflight;
      }
      (*b)->Submit(Request::Write(off, bufs.back().data(), 8192), [&](absl::Status s) {
        std::lock_guard<std::mutex> l(mu);
        failed += !s.ok();
        --inflight;
        cv.notify_all();
      });
    }
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return inflight == 0; });
    REQUIRE(failed == 0);
    l.unlock();
    SyncBackend sync(**b);
    REQUIRE(sync.Flush().ok());
    std::vector<uint8_t> back(size);
    REQUIRE(sync.Read(0, back.data(), size).ok());
    REQUIRE((back == model));
  }
  REQUIRE((Slurp(img) == model));
  unlink(sock.c_str());
  rmdir(sdir);
}
