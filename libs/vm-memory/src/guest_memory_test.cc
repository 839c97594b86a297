#include "vm-memory/guest_memory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <numeric>
#include <vector>

#include "vm-memory/layout.h"

using namespace vm_memory;

namespace {

std::unique_ptr<GuestMemory> TwoRegions() {
  // [0, 64K) and [64K, 128K): adjacent, so accesses may straddle them;
  // [1M, 1M+64K) after a gap.
  std::vector<RegionSpec> layout = {{GuestAddress(0), 0x10000},
                                    {GuestAddress(0x10000), 0x10000},
                                    {GuestAddress(0x100000), 0x10000}};
  auto mem = GuestMemory::Create(layout);
  REQUIRE(mem.ok());
  return std::move(*mem);
}

}  // namespace

TEST_CASE("X86RamLayout leaves the MMIO hole free") {
  auto small = X86RamLayout(256 << 20);
  REQUIRE(small.size() == 1);
  REQUIRE(small[0].start == GuestAddress(0));
  REQUIRE(small[0].size == (256u << 20));

  auto big = X86RamLayout(6ULL << 30);
  REQUIRE(big.size() == 2);
  REQUIRE(big[0].size == kMmioHoleStart);
  REQUIRE(big[1].start == GuestAddress(kMmioHoleEnd));
  REQUIRE(big[1].size == (6ULL << 30) - kMmioHoleStart);
  REQUIRE(X86RamLayout(0).empty());
}

TEST_CASE("Create rejects bad layouts with a message naming the region") {
  std::vector<RegionSpec> unaligned = {{GuestAddress(0x10), 0x1000}};
  auto a = GuestMemory::Create(unaligned);
  REQUIRE_FALSE(a.ok());
  REQUIRE(a.status().message().find("0x10") != std::string::npos);

  std::vector<RegionSpec> overlap = {{GuestAddress(0), 0x2000},
                                     {GuestAddress(0x1000), 0x1000}};
  auto b = GuestMemory::Create(overlap);
  REQUIRE_FALSE(b.ok());
  REQUIRE(b.status().message().find("overlaps") != std::string::npos);

  std::vector<RegionSpec> empty = {{GuestAddress(0), 0}};
  REQUIRE_FALSE(GuestMemory::Create(empty).ok());
  REQUIRE_FALSE(GuestMemory::Create({}).ok());

  std::vector<RegionSpec> wrap = {{GuestAddress(~0xfffULL), 0x2000}};
  auto w = GuestMemory::Create(wrap);
  REQUIRE_FALSE(w.ok());
  REQUIRE(w.status().message().find("wraps") != std::string::npos);
}

TEST_CASE("Read and Write round-trip, including across adjacent regions") {
  auto mem = TwoRegions();
  std::vector<uint8_t> data(0x100);
  std::iota(data.begin(), data.end(), 0);
  GuestAddress straddle(0x10000 - 0x80);
  REQUIRE(mem->Write(straddle, data).ok());
  std::vector<uint8_t> back(0x100);
  REQUIRE(mem->Read(straddle, back).ok());
  REQUIRE(back == data);
}

TEST_CASE("Accesses that leave RAM fail and touch nothing") {
  auto mem = TwoRegions();
  std::vector<uint8_t> ones(0x20, 1);
  // Runs off the end of the second region into the gap.
  absl::Status s = mem->Write(GuestAddress(0x20000 - 0x10), ones);
  REQUIRE(s.code() == absl::StatusCode::kOutOfRange);
  REQUIRE(s.message().find("0x1fff0") != std::string::npos);
  auto back = mem->ReadObj<uint8_t>(GuestAddress(0x20000 - 0x10));
  REQUIRE(back.ok());
  REQUIRE(*back == 0);  // the in-range part was not written either
  REQUIRE(mem->CountDirtyPages() == 0);

  // In the gap, past the end, and wrapping the address space.
  REQUIRE_FALSE(mem->ReadObj<uint32_t>(GuestAddress(0x50000)).ok());
  REQUIRE_FALSE(mem->ReadObj<uint32_t>(GuestAddress(0x110000 - 2)).ok());
  REQUIRE_FALSE(mem->ReadObj<uint64_t>(GuestAddress(UINT64_MAX - 3)).ok());
  REQUIRE_FALSE(mem->CheckRange(GuestAddress(0), UINT64_MAX));
}

TEST_CASE("Zero-length accesses succeed anywhere") {
  auto mem = TwoRegions();
  REQUIRE(mem->Read(GuestAddress(0x50000), {}).ok());
  REQUIRE(mem->CheckRange(GuestAddress(UINT64_MAX), 0));
}

TEST_CASE("ReadObj and WriteObj at the last bytes of a region") {
  auto mem = TwoRegions();
  GuestAddress last(0x110000 - 8);
  REQUIRE(mem->WriteObj<uint64_t>(last, 0x1122334455667788ULL).ok());
  auto v = mem->ReadObj<uint64_t>(last);
  REQUIRE(v.ok());
  REQUIRE(*v == 0x1122334455667788ULL);
}

TEST_CASE("Writes mark exactly the touched pages dirty") {
  auto mem = TwoRegions();
  REQUIRE(mem->WriteObj<uint32_t>(GuestAddress(0x10000 - 2), 7).ok());
  REQUIRE(mem->CountDirtyPages() == 2);
  const GuestRegion* r0 = mem->FindRegion(GuestAddress(0));
  REQUIRE(r0->dirty_bitmap().IsDirty(0xf000));
  REQUIRE_FALSE(r0->dirty_bitmap().IsDirty(0xe000));
  std::vector<uint8_t> sink(64);
  REQUIRE(mem->Read(GuestAddress(0x100000), sink).ok());
  REQUIRE(mem->CountDirtyPages() == 2);  // reads never dirty
}

TEST_CASE("GetSlices splits at region boundaries; write slices dirty pages") {
  auto mem = TwoRegions();
  auto slices = mem->GetSlices(GuestAddress(0xff00), 0x200, Access::kWrite);
  REQUIRE(slices.ok());
  REQUIRE(slices->size() == 2);
  REQUIRE((*slices)[0].size() == 0x100);
  REQUIRE((*slices)[1].size() == 0x100);
  std::vector<uint8_t> pattern(0x100, 0xab);
  (*slices)[1].CopyFrom(pattern);
  auto b = mem->ReadObj<uint8_t>(GuestAddress(0x10000));
  REQUIRE(*b == 0xab);
  REQUIRE(mem->CountDirtyPages() == 2);
  REQUIRE_FALSE(mem->GetSlices(GuestAddress(0x1fff0), 0x20, Access::kRead).ok());
}

TEST_CASE("Regions are memfds that see the guest's bytes") {
  auto mem = TwoRegions();
  REQUIRE(mem->WriteObj<uint32_t>(GuestAddress(0x100004), 0xdeadbeef).ok());
  const GuestRegion* r = mem->FindRegion(GuestAddress(0x100000));
  REQUIRE(r != nullptr);
  uint32_t v = 0;
  REQUIRE(::pread(r->fd(), &v, 4, 4) == 4);
  REQUIRE(v == 0xdeadbeef);
  struct stat st;
  REQUIRE(::fstat(r->fd(), &st) == 0);
  REQUIRE(static_cast<uint64_t>(st.st_size) == r->size());
  REQUIRE(mem->regions().size() == 3);
  REQUIRE(mem->total_size() == 0x30000);
  REQUIRE(mem->FindRegion(GuestAddress(0x20000)) == nullptr);
}

TEST_CASE("Hugepage-backed RAM works or fails with a clear error") {
  std::vector<RegionSpec> layout = {{GuestAddress(0), 2 << 20}};
  MemoryOptions opts;
  opts.hugepages = true;
  auto mem = GuestMemory::Create(layout, opts);
  if (mem.ok()) {
    REQUIRE((*mem)->WriteObj<uint64_t>(GuestAddress(8), 42).ok());
    REQUIRE((*mem)->regions()[0]->page_size() == (2u << 20));
  } else {
    // No hugepages reserved on this host: the error names the memfd.
    REQUIRE(mem.status().message().find("hugetlb") != std::string::npos);
  }
  std::vector<RegionSpec> small = {{GuestAddress(0), 4096}};
  REQUIRE_FALSE(GuestMemory::Create(small, opts).ok());  // not 2M-aligned
}

TEST_CASE("ZeroRange zeroes partial and whole pages across regions") {
  auto mem = TwoRegions();
  std::vector<uint8_t> ones(0x20000, 0xff);
  REQUIRE(mem->Write(GuestAddress(0), ones).ok());
  const GuestRegion* r0 = mem->FindRegion(GuestAddress(0));
  r0->dirty_bitmap().TakeAndClear();
  // From mid-page 0 to mid-page 0x11 of the second region.
  REQUIRE(mem->ZeroRange(GuestAddress(0x800), 0x11800 - 0x800).ok());
  std::vector<uint8_t> back(0x20000);
  REQUIRE(mem->Read(GuestAddress(0), back).ok());
  for (uint64_t i = 0; i < back.size(); ++i) {
    bool zero = i >= 0x800 && i < 0x11800;
    if (back[i] != (zero ? 0 : 0xff)) FAIL("byte " << i << " is " << int(back[i]));
  }
  REQUIRE(r0->dirty_bitmap().IsDirty(0x800));
  REQUIRE(r0->dirty_bitmap().IsDirty(0xf000));
  REQUIRE_FALSE(mem->ZeroRange(GuestAddress(0x1fff0), 0x20).ok());
  REQUIRE(mem->ZeroRange(GuestAddress(0x100000), 0x10).ok());  // sub-page
}

TEST_CASE("16-bit atomic loads and stores: aligned, in RAM, marking dirty") {
  auto mem = TwoRegions();
  REQUIRE(mem->StoreAtomic16(GuestAddress(0x10002), 0xbeef).ok());
  REQUIRE(mem->LoadAtomic16(GuestAddress(0x10002)).value() == 0xbeef);
  REQUIRE(mem->ReadObj<uint16_t>(GuestAddress(0x10002)).value() == 0xbeef);
  REQUIRE(mem->FindRegion(GuestAddress(0x10002))->dirty_bitmap().IsDirty(0x2));
  REQUIRE_FALSE(mem->LoadAtomic16(GuestAddress(0x10003)).ok());  // misaligned
  REQUIRE_FALSE(mem->StoreAtomic16(GuestAddress(0x20000), 1).ok());  // a gap
  REQUIRE_FALSE(mem->LoadAtomic16(GuestAddress(0xfffffffffffffffe)).ok());
}

TEST_CASE("MapFile maps a file privately: reads come from it, writes stay in the VM") {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string path = std::string(dir ? dir : "/tmp") + "/mapfileXXXXXX";
  int fd = ::mkstemp(path.data());
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, 3 * 4096) == 0);
  uint8_t v = 0x5a;
  REQUIRE(::pwrite(fd, &v, 1, 4096 + 7) == 1);    // region 0, page 1
  v = 0x6b;
  REQUIRE(::pwrite(fd, &v, 1, 2 * 4096 + 1) == 1);  // region 1's first byte + 1
  std::vector<RegionSpec> layout = {{GuestAddress(0), 2 * 4096},
                                    {GuestAddress(0x100000), 4096}};
  auto mem = GuestMemory::MapFile(layout, fd);
  REQUIRE(mem.ok());
  CHECK((*mem)->regions()[0]->private_file());
  CHECK(*(*mem)->ReadObj<uint8_t>(GuestAddress(4096 + 7)) == 0x5a);
  CHECK(*(*mem)->ReadObj<uint8_t>(GuestAddress(0x100001)) == 0x6b);
  REQUIRE((*mem)->WriteObj<uint8_t>(GuestAddress(4096 + 7), 0x11).ok());
  REQUIRE((*mem)->ZeroRange(GuestAddress(0x100000), 4096).ok());
  CHECK(*(*mem)->ReadObj<uint8_t>(GuestAddress(4096 + 7)) == 0x11);
  CHECK(*(*mem)->ReadObj<uint8_t>(GuestAddress(0x100001)) == 0);
  // The file is untouched: neither the write nor the zeroing reached it.
  REQUIRE(::pread(fd, &v, 1, 4096 + 7) == 1);
  CHECK(v == 0x5a);
  REQUIRE(::pread(fd, &v, 1, 2 * 4096 + 1) == 1);
  CHECK(v == 0x6b);

  // A file shorter than the regions is refused before anything is mapped.
  std::vector<RegionSpec> big = {{GuestAddress(0), 4 * 4096}};
  auto short_file = GuestMemory::MapFile(big, fd);
  REQUIRE_FALSE(short_file.ok());
  CHECK(std::string(short_file.status().message()).find("shorter than the regions") !=
        std::string::npos);
  std::vector<RegionSpec> odd = {{GuestAddress(0x800), 4096}};
  CHECK_FALSE(GuestMemory::MapFile(odd, fd).ok());
  ::close(fd);
  ::unlink(path.c_str());
}

TEST_CASE("Adopt maps another GuestMemory's fds shared: writes go both ways") {
  auto owner = TwoRegions();
  std::vector<RegionSpec> layout;
  std::vector<UniqueFd> fds;
  for (const GuestRegion* r : owner->regions()) {
    layout.push_back({r->start(), r->size()});
    fds.emplace_back(::fcntl(r->fd(), F_DUPFD_CLOEXEC, 0));
  }
  auto view = GuestMemory::Adopt(layout, std::move(fds));
  REQUIRE(view.ok());
  REQUIRE((*view)->WriteObj<uint32_t>(GuestAddress(0x100008), 0x12345678).ok());
  REQUIRE(owner->ReadObj<uint32_t>(GuestAddress(0x100008)).value() == 0x12345678);
  REQUIRE(owner->WriteObj<uint32_t>(GuestAddress(0x0), 0xcafe).ok());
  REQUIRE((*view)->ReadObj<uint32_t>(GuestAddress(0x0)).value() == 0xcafe);

  // A region longer than its fd, or a count mismatch, is refused by name.
  std::vector<UniqueFd> one;
  one.emplace_back(::fcntl(owner->regions()[0]->fd(), F_DUPFD_CLOEXEC, 0));
  auto bad = GuestMemory::Adopt(layout, std::move(one));
  REQUIRE(!bad.ok());
  REQUIRE(std::string(bad.status().message()).find("fds") != std::string::npos);
  std::vector<RegionSpec> big = {{owner->regions()[0]->start(), owner->regions()[0]->size() * 4}};
  std::vector<UniqueFd> fd1;
  fd1.emplace_back(::fcntl(owner->regions()[0]->fd(), F_DUPFD_CLOEXEC, 0));
  auto shortfd = GuestMemory::Adopt(big, std::move(fd1));
  REQUIRE(!shortfd.ok());
  REQUIRE(std::string(shortfd.status().message()).find("holds only") != std::string::npos);
}
