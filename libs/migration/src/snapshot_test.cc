#include "migration/snapshot.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "migration/state_codec.h"

using namespace migration;
using vm_memory::GuestAddress;
using vm_memory::GuestMemory;

namespace {

std::string TempDir(const char* name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name;
}

std::unique_ptr<GuestMemory> Memory() {
  auto m = GuestMemory::Create(
      std::vector<vm_memory::RegionSpec>{{GuestAddress(0), 4 << 20}});
  REQUIRE(m.ok());
  return std::move(*m);
}

// A one-vCPU split-irqchip state, as a launcher would fill it in.
v1::Snapshot MinimalState() {
  v1::Snapshot s;
  s.set_producer("snapshot_test");
  s.mutable_machine()->set_vcpus(1);
  s.mutable_machine()->set_irqchip(v1::IRQCHIP_MODE_SPLIT);
  vcpu::VcpuState st;
  st.xsave.assign(4096, 0);
  kvm_cpuid_entry2 leaf = {};
  *s.add_vcpus() = EncodeVcpu(st, std::span<const kvm_cpuid_entry2>(&leaf, 1));
  s.set_kvm_clock(EncodeClock(kvm_clock_data{}));
  *s.mutable_irqchip()->mutable_ioapic() = EncodeIoapic(vcpu::Ioapic::State{});
  return s;
}

v1::Snapshot Written() {
  auto mem = Memory();
  v1::Snapshot s = MinimalState();
  s.mutable_machine()->add_regions()->set_size(4 << 20);
  s.mutable_memory()->set_file_size(4 << 20);
  s.mutable_memory()->set_chunk_size(2 << 20);
  s.mutable_memory()->add_chunk_crc32(0);
  s.mutable_memory()->add_chunk_crc32(0);
  s.set_format_version(kFormatVersion);
  REQUIRE(ValidateSnapshot(s).ok());
  return s;
}

std::string MessageOf(const v1::Snapshot& s) {
  return std::string(ValidateSnapshot(s).message());
}

}  // namespace

TEST_CASE("A snapshot directory round-trips state and memory") {
  std::string dir = TempDir("snap_roundtrip");
  auto mem = Memory();
  std::vector<uint8_t> page(4096, 0x3c);
  REQUIRE(mem->Write(GuestAddress(0x201000), page).ok());
  REQUIRE(WriteSnapshot(dir, MinimalState(), *mem).ok());

  auto back = ReadSnapshot(dir);
  REQUIRE(back.ok());
  CHECK(back->format_version() == kFormatVersion);
  CHECK(back->producer() == "snapshot_test");
  REQUIRE(back->machine().regions_size() == 1);
  CHECK(back->machine().regions(0).size() == (4u << 20));
  auto dst = Memory();
  REQUIRE(LoadSnapshotMemory(dir, *back, *dst).ok());
  CHECK(*dst->ReadObj<uint8_t>(GuestAddress(0x201000)) == 0x3c);
  CHECK(*dst->ReadObj<uint8_t>(GuestAddress(0x200fff)) == 0);
}

TEST_CASE("Reading a damaged snapshot directory names what is wrong") {
  std::string dir = TempDir("snap_damaged");
  auto mem = Memory();
  REQUIRE(WriteSnapshot(dir, MinimalState(), *mem).ok());
  REQUIRE(::truncate((dir + "/memory").c_str(), 4096) == 0);
  auto r = ReadSnapshot(dir);
  REQUIRE(r.status().code() == absl::StatusCode::kDataLoss);
  CHECK(std::string(r.status().message()).find("is 4096 bytes") != std::string::npos);

  std::ofstream(dir + "/state.pb", std::ios::trunc) << "garbage";
  r = ReadSnapshot(dir);
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()).find("state.pb: snapshot state") !=
        std::string::npos);

  r = ReadSnapshot(TempDir("snap_missing"));
  REQUIRE(r.status().code() == absl::StatusCode::kNotFound);
  CHECK(std::string(r.status().message()).find("snap_missing/state.pb") != std::string::npos);
}

TEST_CASE("Validation bounds every count, size and version") {
  v1::Snapshot s = Written();
  s.set_format_version(2);
  CHECK(MessageOf(s).find("format version 2") != std::string::npos);
  CHECK(ValidateSnapshot(s).code() == absl::StatusCode::kFailedPrecondition);

  s = Written();
  s.mutable_machine()->set_vcpus(0);
  CHECK(MessageOf(s).find("0 vCPUs") != std::string::npos);
  s.mutable_machine()->set_vcpus(2);
  CHECK(MessageOf(s).find("1 vCPU records for a machine of 2") != std::string::npos);

  s = Written();
  s.mutable_machine()->mutable_regions(0)->set_guest_address(0x123);
  CHECK(MessageOf(s).find("unaligned") != std::string::npos);
  s = Written();
  s.mutable_machine()->mutable_regions(0)->set_guest_address(~0ULL << 12);
  CHECK(MessageOf(s).find("wraps") != std::string::npos);
  s = Written();
  *s.mutable_machine()->add_regions() = s.machine().regions(0);
  CHECK(MessageOf(s).find("overlap") != std::string::npos);
  s = Written();
  s.mutable_machine()->mutable_regions(0)->set_size(2ULL << 40);
  CHECK(MessageOf(s).find("GiB of memory") != std::string::npos);

  s = Written();
  s.mutable_memory()->set_chunk_size(3 << 20);
  CHECK(MessageOf(s).find("chunk size") != std::string::npos);
  s = Written();
  s.mutable_memory()->add_chunk_crc32(1);
  CHECK(MessageOf(s).find("3 chunk checksums for 2 chunks") != std::string::npos);
  s = Written();
  s.mutable_memory()->set_file_size(1);
  CHECK(MessageOf(s).find("memory file size 1") != std::string::npos);

  s = Written();
  s.mutable_irqchip()->clear_ioapic();
  CHECK(MessageOf(s).find("split irqchip without IOAPIC") != std::string::npos);
  s = Written();
  s.mutable_machine()->set_irqchip(v1::IRQCHIP_MODE_FULL);
  CHECK(MessageOf(s).find("full irqchip without") != std::string::npos);
  s = Written();
  s.mutable_machine()->set_irqchip(v1::IrqchipMode(9));
  CHECK(MessageOf(s).find("irqchip mode 9") != std::string::npos);

  CHECK_FALSE(ParseSnapshot(std::string(kMaxStateBytes + 1, '\0')).ok());
  CHECK(ParseSnapshot(Written().SerializeAsString()).ok());
}

TEST_CASE("A lazy restore maps the memory file; a re-snapshot does not disturb it") {
  std::string dir = TempDir("snap_lazy");
  auto mem = Memory();
  std::vector<uint8_t> page(4096, 0x7e);
  REQUIRE(mem->Write(GuestAddress(0x3000), page).ok());
  REQUIRE(WriteSnapshot(dir, MinimalState(), *mem).ok());
  auto s = ReadSnapshot(dir);
  REQUIRE(s.ok());
  auto restored = RestoreMemory(dir, *s, RestoreMode::kLazy, {});
  REQUIRE(restored.ok());
  auto& lazy = restored->memory;
  CHECK(lazy->regions()[0]->private_file());
  CHECK(*lazy->ReadObj<uint8_t>(GuestAddress(0x3000)) == 0x7e);
  // The restored guest writes into a page that is a hole in the file...
  REQUIRE(lazy->WriteObj<uint8_t>(GuestAddress(0x100000), 0x42).ok());
  // ...and a snapshot of it, written over the one it maps, keeps that
  // write and leaves the mapping intact (the old file is renamed over).
  REQUIRE(WriteSnapshot(dir, MinimalState(), *lazy).ok());
  CHECK(*lazy->ReadObj<uint8_t>(GuestAddress(0x3000)) == 0x7e);
  auto again = ReadSnapshot(dir);
  REQUIRE(again.ok());
  auto eager = RestoreMemory(dir, *again, RestoreMode::kEager, {});
  REQUIRE(eager.ok());
  CHECK(*eager->memory->ReadObj<uint8_t>(GuestAddress(0x100000)) == 0x42);
  CHECK(*eager->memory->ReadObj<uint8_t>(GuestAddress(0x3000)) == 0x7e);
  CHECK(eager->pager == nullptr);

  vm_memory::MemoryOptions huge;
  huge.hugepages = true;
  auto refused = RestoreMemory(dir, *again, RestoreMode::kLazy, huge);
  REQUIRE_FALSE(refused.ok());
  CHECK(std::string(refused.status().message()).find("hugepages") != std::string::npos);
  CHECK(*ParseRestoreMode("lazy") == RestoreMode::kLazy);
  CHECK(*ParseRestoreMode("eager") == RestoreMode::kEager);
  CHECK(*ParseRestoreMode("uffd") == RestoreMode::kUffd);
  CHECK_FALSE(ParseRestoreMode("postcopy").ok());
}

namespace {

// Page bitmaps (one per region of `mem`) with `pages` (guest page numbers
// of a one-region memory) set.
PageBitmaps Dirty(const GuestMemory& mem, std::vector<uint64_t> pages) {
  PageBitmaps out;
  for (const vm_memory::GuestRegion* r : mem.regions()) {
    out.emplace_back((r->size() / 4096 + 63) / 64, 0);
  }
  for (uint64_t p : pages) out[0][p / 64] |= uint64_t{1} << (p % 64);
  return out;
}

uint8_t ByteAt(const GuestMemory& mem, uint64_t addr) {
  return *mem.ReadObj<uint8_t>(GuestAddress(addr));
}

void Fill(GuestMemory& mem, uint64_t addr, uint8_t value) {
  std::vector<uint8_t> page(4096, value);
  REQUIRE(mem.Write(GuestAddress(addr), page).ok());
}

v1::DiffBase BaseOf(const std::string& dir) {
  auto s = ReadSnapshot(dir);
  REQUIRE(s.ok());
  v1::DiffBase b;
  b.set_directory(dir);
  b.set_snapshot_id(s->snapshot_id());
  return b;
}

}  // namespace

TEST_CASE("A diff snapshot stores the dirtied pages and restores over its base") {
  std::string base = TempDir("diff_base"), d1 = TempDir("diff_1"), d2 = TempDir("diff_2");
  auto mem = Memory();
  Fill(*mem, 0x1000, 0x11);
  Fill(*mem, 0x2000, 0x22);
  Fill(*mem, 0x3000, 0x33);
  REQUIRE(WriteSnapshot(base, MinimalState(), *mem).ok());

  // After the base: page 1 changes, page 2 becomes zero, page 5 is new.
  Fill(*mem, 0x1000, 0xa1);
  Fill(*mem, 0x2000, 0x00);
  Fill(*mem, 0x5000, 0x55);
  REQUIRE(WriteDiffSnapshot(d1, MinimalState(), *mem, Dirty(*mem, {1, 2, 5}), BaseOf(base)).ok());
  // A second diff on the first: page 3 changes.
  Fill(*mem, 0x3000, 0xc3);
  REQUIRE(WriteDiffSnapshot(d2, MinimalState(), *mem, Dirty(*mem, {3}), BaseOf(d1)).ok());

  auto s1 = ReadSnapshot(d1);
  REQUIRE(s1.ok());
  REQUIRE(s1->memory().present_size() == 2);  // pages 1-2 merged, page 5
  CHECK(s1->memory().present(0).offset() == 0x1000);
  CHECK(s1->memory().present(0).size() == 0x2000);
  CHECK(s1->memory().present(1).offset() == 0x5000);
  CHECK(s1->base().directory() == base);

  auto chain = ReadSnapshotChain(d2);
  REQUIRE(chain.ok());
  REQUIRE(chain->size() == 3);
  CHECK((*chain)[0].dir == base);
  CHECK((*chain)[2].dir == d2);

  for (RestoreMode mode : {RestoreMode::kEager, RestoreMode::kLazy}) {
    auto s2 = ReadSnapshot(d2);
    REQUIRE(s2.ok());
    auto ram = RestoreMemory(d2, *s2, mode, {});
    REQUIRE(ram.ok());
    CHECK(ByteAt(*ram->memory, 0x1000) == 0xa1);
    CHECK(ByteAt(*ram->memory, 0x2000) == 0x00);
    CHECK(ByteAt(*ram->memory, 0x3000) == 0xc3);
    CHECK(ByteAt(*ram->memory, 0x5000) == 0x55);
    CHECK(ByteAt(*ram->memory, 0x4000) == 0x00);
  }
  // The first diff alone still restores to its own point in time.
  auto ram1 = RestoreMemory(d1, *s1, RestoreMode::kEager, {});
  REQUIRE(ram1.ok());
  CHECK(ByteAt(*ram1->memory, 0x3000) == 0x33);

  auto uffd = RestoreMemory(d2, *ReadSnapshot(d2), RestoreMode::kUffd, {});
  REQUIRE_FALSE(uffd.ok());
  CHECK_THAT(std::string(uffd.status().message()), Catch::Contains("use eager or lazy"));

  // A flipped byte in a diff's present page fails its chunk's checksum.
  {
    int fd = ::open((d2 + "/memory").c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    uint8_t bad = 0x5a;
    REQUIRE(::pwrite(fd, &bad, 1, 0x3010) == 1);
    ::close(fd);
  }
  auto corrupt = RestoreMemory(d2, *ReadSnapshot(d2), RestoreMode::kEager, {});
  REQUIRE_FALSE(corrupt.ok());
  CHECK_THAT(std::string(corrupt.status().message()),
             Catch::Contains(d2 + "/memory: memory file chunk 0 (guest 0x0..0x200000) fails"));
}

TEST_CASE("A diff snapshot whose base changed or went away is refused by name") {
  std::string base = TempDir("diffx_base"), diff = TempDir("diffx_1");
  auto mem = Memory();
  Fill(*mem, 0x1000, 0x11);
  REQUIRE(WriteSnapshot(base, MinimalState(), *mem).ok());
  v1::DiffBase b = BaseOf(base);
  Fill(*mem, 0x1000, 0x12);
  auto same = WriteDiffSnapshot(base, MinimalState(), *mem, Dirty(*mem, {1}), b);
  CHECK_THAT(std::string(same.message()), Catch::Contains("its base's own directory"));
  REQUIRE(WriteDiffSnapshot(diff, MinimalState(), *mem, Dirty(*mem, {1}), b).ok());

  // The base replaced by another snapshot: its id differs.
  REQUIRE(WriteSnapshot(base, MinimalState(), *mem).ok());
  auto chain = ReadSnapshotChain(diff);
  REQUIRE_FALSE(chain.ok());
  CHECK_THAT(std::string(chain.status().message()), Catch::Contains("was replaced since"));

  // The base gone.
  std::string gone = base + "-moved";
  std::filesystem::remove_all(gone);
  REQUIRE(::rename(base.c_str(), gone.c_str()) == 0);
  chain = ReadSnapshotChain(diff);
  REQUIRE_FALSE(chain.ok());
  CHECK_THAT(std::string(chain.status().message()), Catch::Contains("its base " + base));
}

TEST_CASE("A diff snapshot's present ranges and base are validated") {
  v1::Snapshot s = Written();
  s.set_snapshot_id(std::string(16, 'a'));
  v1::FileRange* r = s.mutable_memory()->add_present();
  r->set_offset(0x1000);
  r->set_size(0x1000);
  CHECK_THAT(MessageOf(s), Catch::Contains("present ranges in a full snapshot"));
  s.mutable_base()->set_directory("relative/dir");
  s.mutable_base()->set_snapshot_id(std::string(16, 'b'));
  CHECK_THAT(MessageOf(s), Catch::Contains("absolute path"));
  s.mutable_base()->set_directory("/snap/base");
  CHECK(ValidateSnapshot(s).ok());
  s.mutable_base()->set_snapshot_id("short");
  CHECK_THAT(MessageOf(s), Catch::Contains("diff base snapshot id of 5 bytes"));
  s.mutable_base()->set_snapshot_id(std::string(16, 'b'));
  r->set_size(0x800);
  CHECK_THAT(MessageOf(s), Catch::Contains("unaligned"));
  r->set_size(4 << 20);
  CHECK_THAT(MessageOf(s), Catch::Contains("outside the 4194304-byte file"));
  r->set_size(0x1000);
  v1::FileRange* r2 = s.mutable_memory()->add_present();
  r2->set_offset(0x2000);
  r2->set_size(0x1000);
  CHECK_THAT(MessageOf(s), Catch::Contains("overlaps, touches or precedes"));
  r2->set_offset(0x3000);
  CHECK(ValidateSnapshot(s).ok());
  r2->set_offset(0xffff'ffff'ffff'f000);
  CHECK_THAT(MessageOf(s), Catch::Contains("outside"));
  s.set_snapshot_id("xyz");
  CHECK_THAT(MessageOf(s), Catch::Contains("snapshot id of 3 bytes"));
}

TEST_CASE("The diff fuzz seed is a valid diff whose manifest applies") {
  std::ifstream in("libs/migration/testdata/state_diff_seed.pb", std::ios::binary);
  REQUIRE(in.good());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto s = ParseSnapshot(bytes);
  REQUIRE(s.ok());
  REQUIRE(s->has_base());
  auto mem = GuestMemory::Create(std::vector<vm_memory::RegionSpec>{{GuestAddress(0), 1 << 20}});
  REQUIRE(mem.ok());
  int fd = ::memfd_create("seed", 0);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, 1 << 20) == 0);
  CHECK(ApplyDiffMemoryFile(fd, s->memory(), **mem).ok());
  ::close(fd);
}
