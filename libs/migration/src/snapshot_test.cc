#include "migration/snapshot.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
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
