#include "migration/memory_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>
#include <vector>

using namespace migration;
using vm_memory::GuestAddress;
using vm_memory::GuestMemory;

namespace {

std::vector<vm_memory::RegionSpec> Layout() {
  return {{GuestAddress(0), 3 << 20}, {GuestAddress(8 << 20), 1 << 20}};
}

std::unique_ptr<GuestMemory> NewMemory() {
  auto m = GuestMemory::Create(Layout());
  REQUIRE(m.ok());
  return std::move(*m);
}

int TempFile() {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string path = std::string(dir ? dir : "/tmp") + "/memfileXXXXXX";
  int fd = ::mkstemp(path.data());
  REQUIRE(fd >= 0);
  ::unlink(path.c_str());
  return fd;
}

uint64_t DataBytes(int fd, uint64_t size) {
  uint64_t total = 0, off = 0;
  while (off < size) {
    off_t d = ::lseek(fd, off, SEEK_DATA);
    if (d < 0) break;
    off_t h = ::lseek(fd, d, SEEK_HOLE);
    total += h - d;
    off = h;
  }
  return total;
}

void Fill(GuestMemory& m, uint64_t addr, uint64_t len, uint8_t v) {
  std::vector<uint8_t> buf(len, v);
  REQUIRE(m.Write(GuestAddress(addr), buf).ok());
}

}  // namespace

TEST_CASE("The memory file keeps only non-zero pages and loads back exactly") {
  auto src = NewMemory();
  Fill(*src, 0x1000, 0x2000, 0xaa);             // two pages in region 0
  Fill(*src, (2 << 20) + 0xff0, 0x20, 0xbb);    // straddles a page boundary
  Fill(*src, 0x10000, 0x1000, 0);               // touched but zero: a hole
  Fill(*src, (8 << 20) + 0x3000, 0x1000, 0xcc); // region 1
  int fd = TempFile();
  auto manifest = WriteMemoryFile(*src, fd);
  REQUIRE(manifest.ok());
  CHECK(manifest->file_size() == (4u << 20));
  CHECK(manifest->chunk_size() == kDefaultChunkSize);
  CHECK(manifest->chunk_crc32_size() == 2);
  struct stat st;
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_size == (4 << 20));
  // 2 + 2 + 1 pages of data (the file system may round extents up a little).
  uint64_t data = DataBytes(fd, 4 << 20);
  CHECK(data >= 5 * 4096);
  CHECK(data <= 64 * 4096);

  auto dst = NewMemory();
  REQUIRE(LoadMemoryFile(fd, *manifest, *dst).ok());
  for (uint64_t addr : {0x0ull, 0x1000ull, 0x2fffull, (2ull << 20) + 0xff0,
                        (2ull << 20) + 0x100f, 0x10000ull, (8ull << 20) + 0x3000,
                        (8ull << 20) + 0x3fff, (8ull << 20) + 0x4000}) {
    INFO("guest address " << std::hex << addr);
    CHECK(*dst->ReadObj<uint8_t>(GuestAddress(addr)) ==
          *src->ReadObj<uint8_t>(GuestAddress(addr)));
  }
  ::close(fd);
}

TEST_CASE("A corrupt memory file fails its checksum, naming the guest range") {
  auto src = NewMemory();
  Fill(*src, (8 << 20) + 0x5000, 0x1000, 0x11);
  int fd = TempFile();
  auto manifest = WriteMemoryFile(*src, fd);
  REQUIRE(manifest.ok());
  uint8_t evil = 0x12;
  REQUIRE(::pwrite(fd, &evil, 1, (3 << 20) + 0x5000) == 1);
  auto dst = NewMemory();
  absl::Status s = LoadMemoryFile(fd, *manifest, *dst);
  REQUIRE(s.code() == absl::StatusCode::kDataLoss);
  CHECK(std::string(s.message()).find("chunk 1 (guest 0x200000..0x300000 0x800000..0x900000)") !=
        std::string::npos);

  // Data written into what should be a hole is caught too.
  REQUIRE(::pwrite(fd, &evil, 1, 0x100) == 1);
  evil = 0x11;
  REQUIRE(::pwrite(fd, &evil, 1, (3 << 20) + 0x5000) == 1);
  s = LoadMemoryFile(fd, *manifest, *NewMemory());
  REQUIRE(s.code() == absl::StatusCode::kDataLoss);
  CHECK(std::string(s.message()).find("chunk 0 (guest 0x0..0x200000)") != std::string::npos);
  ::close(fd);
}

TEST_CASE("A manifest that does not fit the memory or is malformed is refused") {
  auto src = NewMemory();
  int fd = TempFile();
  auto manifest = WriteMemoryFile(*src, fd);
  REQUIRE(manifest.ok());
  auto other = GuestMemory::Create(std::vector<vm_memory::RegionSpec>{
      {GuestAddress(0), 1 << 20}});
  REQUIRE(other.ok());
  CHECK(LoadMemoryFile(fd, *manifest, **other).code() ==
        absl::StatusCode::kInvalidArgument);
  auto m = *manifest;
  m.set_chunk_size(0);
  CHECK(LoadMemoryFile(fd, m, *NewMemory()).code() == absl::StatusCode::kInvalidArgument);
  m = *manifest;
  m.add_chunk_crc32(0);
  CHECK(LoadMemoryFile(fd, m, *NewMemory()).code() == absl::StatusCode::kDataLoss);
  CHECK_FALSE(WriteMemoryFile(*src, fd, 1000).ok());
  ::close(fd);
}

TEST_CASE("Checksums of holes equal those of zeros read from the file") {
  // A memory whose file is all data (every page non-zero but one byte) and
  // one whose file is mostly holes must checksum the same bytes the same:
  // load each file and compare the manifests' CRCs with zlib over the file.
  auto src = NewMemory();
  Fill(*src, 0x5000, 1, 0x9);
  Fill(*src, (8 << 20) + 0xfff, 1, 0x8);
  int fd = TempFile();
  auto manifest = WriteMemoryFile(*src, fd);
  REQUIRE(manifest.ok());
  std::vector<uint8_t> chunk(kDefaultChunkSize);
  for (int i = 0; i < manifest->chunk_crc32_size(); ++i) {
    REQUIRE(::pread(fd, chunk.data(), chunk.size(), uint64_t{kDefaultChunkSize} * i) ==
            static_cast<ssize_t>(chunk.size()));
    CHECK(manifest->chunk_crc32(i) == crc32_z(0, chunk.data(), chunk.size()));
  }
  ::close(fd);
}
