// RestoreMode::kUffd: pages filled by UffdPager on first touch. Its own
// target, run outside Bazel's sandbox: userfaultfd with kernel-mode faults
// needs privileges a sandboxed (user-namespaced) test does not have.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "kindling/test_skip.h"
#include "migration/snapshot.h"
#include "migration/state_codec.h"
#include "migration/uffd_pager.h"
#include "migration/working_set.h"

using namespace migration;
using vm_memory::GuestAddress;

namespace {

std::string TempDir(const char* name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name;
}

v1::Snapshot MinimalState() {
  v1::Snapshot s;
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

}  // namespace

TEST_CASE("A uffd restore fills pages from the memory file, then retires") {
  std::string dir = TempDir("snap_uffd");
  auto made = vm_memory::GuestMemory::Create(
      std::vector<vm_memory::RegionSpec>{{GuestAddress(0), 4 << 20}});
  REQUIRE(made.ok());
  auto& mem = *made;
  std::vector<uint8_t> page(4096, 0x5c);
  REQUIRE(mem->Write(GuestAddress(0x7000), page).ok());
  REQUIRE(WriteSnapshot(dir, MinimalState(), *mem).ok());
  auto s = ReadSnapshot(dir);
  REQUIRE(s.ok());
  auto r = RestoreMemory(dir, *s, RestoreMode::kUffd, {});
  if (!r.ok() && r.status().code() == absl::StatusCode::kFailedPrecondition) {
    KINDLING_SKIP(std::string(r.status().message()));
  }
  INFO(r.status().message());
  REQUIRE(r.ok());
  REQUIRE(r->pager != nullptr);
  CHECK(*r->memory->ReadObj<uint8_t>(GuestAddress(0x7123)) == 0x5c);  // from the file
  CHECK(*r->memory->ReadObj<uint8_t>(GuestAddress(0x200000)) == 0);   // a hole
  REQUIRE(r->memory->WriteObj<uint8_t>(GuestAddress(0x7000), 1).ok());
  CHECK(*r->memory->ReadObj<uint8_t>(GuestAddress(0x7000)) == 1);     // stays written
  // The data page came by a fault or by the background fill, once.
  REQUIRE(r->pager->WaitRetired(absl::Seconds(5)));
  CHECK(r->pager->faults() + r->pager->filled() >= 1);
  CHECK(r->pager->filled() <= 1);
  CHECK(*r->memory->ReadObj<uint8_t>(GuestAddress(0x7000)) == 1);
  CHECK(*r->memory->ReadObj<uint8_t>(GuestAddress(0x300000)) == 0);  // a hole, after
}

namespace {

// A snapshot of 4 MiB whose data pages are 7 and 16..19 (the rest holes),
// each page filled with its own number; and fresh RAM of the same layout.
struct PagerFixture {
  std::string dir = TempDir("snap_uffd_ws");
  std::unique_ptr<vm_memory::GuestMemory> ram;
  vm_memory::UniqueFd file;

  PagerFixture() {
    auto made = vm_memory::GuestMemory::Create(
        std::vector<vm_memory::RegionSpec>{{GuestAddress(0), 4 << 20}});
    REQUIRE(made.ok());
    for (uint64_t page : {7, 16, 17, 18, 19}) {
      std::vector<uint8_t> bytes(4096, static_cast<uint8_t>(page));
      REQUIRE((*made)->Write(GuestAddress(page * 4096), bytes).ok());
    }
    REQUIRE(WriteSnapshot(dir, MinimalState(), **made).ok());
    auto fresh = vm_memory::GuestMemory::Create(
        std::vector<vm_memory::RegionSpec>{{GuestAddress(0), 4 << 20}});
    REQUIRE(fresh.ok());
    ram = *std::move(fresh);
    file = vm_memory::UniqueFd(::open((dir + "/memory").c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(file.valid());
  }

  uint8_t At(uint64_t page) { return *ram->ReadObj<uint8_t>(GuestAddress(page * 4096 + 100)); }
};

bool WaitFor(const std::function<bool()>& done) {
  for (int i = 0; i < 5000 && !done(); ++i) ::usleep(1000);
  return done();
}

}  // namespace

TEST_CASE("A uffd restore loads the working set before the guest asks") {
  PagerFixture f;
  PagerOptions o;
  o.prefetch = {16, 17, 18, 19, 7, 100 /* a hole */, 1 << 30 /* past the end */};
  auto pager = UffdPager::Start(*f.ram, std::move(f.file), o);
  if (!pager.ok() && pager.status().code() == absl::StatusCode::kFailedPrecondition) {
    KINDLING_SKIP(std::string(pager.status().message()));
  }
  REQUIRE(pager.ok());
  REQUIRE(WaitFor([&] { return (*pager)->prefetched() == 5; }));
  for (uint64_t page : {7, 16, 17, 18, 19}) CHECK(f.At(page) == page);
  CHECK((*pager)->faults() == 0);  // all there before the first touch
  CHECK(f.At(100) == 0);           // a hole: not loaded ahead, a fault fills it
  CHECK((*pager)->faults() == 1);
  CHECK_FALSE((*pager)->retired());  // no fill asked for: faults are still served
}

TEST_CASE("A uffd restore with fill_rest loads every data page, then retires") {
  PagerFixture f;
  PagerOptions o;
  o.prefetch = {19};
  o.fill_rest = true;
  std::atomic<int> calls{0};
  o.on_retired = [&](std::vector<uint64_t>) { calls++; };
  auto pager = UffdPager::Start(*f.ram, std::move(f.file), o);
  if (!pager.ok() && pager.status().code() == absl::StatusCode::kFailedPrecondition) {
    KINDLING_SKIP(std::string(pager.status().message()));
  }
  REQUIRE(pager.ok());
  REQUIRE((*pager)->WaitRetired(absl::Seconds(5)));
  REQUIRE(WaitFor([&] { return calls.load() == 1; }));
  CHECK((*pager)->prefetched() == 1);
  CHECK((*pager)->filled() == 4);  // 7, 16, 17, 18: holes are not copied
  for (uint64_t page : {7, 16, 17, 18, 19}) CHECK(f.At(page) == page);
  CHECK(f.At(500) == 0);  // a hole after retirement: the kernel's zero page, no fault
  REQUIRE(f.ram->WriteObj<uint8_t>(GuestAddress(600 * 4096), 9).ok());
  CHECK(f.At(600) == 0);  // (byte 100 of the page; byte 0 holds the 9)
  CHECK(*f.ram->ReadObj<uint8_t>(GuestAddress(600 * 4096)) == 9);
  CHECK((*pager)->faults() == 0);
}

TEST_CASE("A uffd restore records the first pages the guest touches") {
  PagerFixture f;
  PagerOptions o;
  o.record_limit = 3;
  auto pager = UffdPager::Start(*f.ram, std::move(f.file), o);
  if (!pager.ok() && pager.status().code() == absl::StatusCode::kFailedPrecondition) {
    KINDLING_SKIP(std::string(pager.status().message()));
  }
  REQUIRE(pager.ok());
  for (uint64_t page : {16, 7, 200, 300}) f.At(page);
  f.At(16);  // present now: no second fault
  CHECK((*pager)->touched_pages() == std::vector<uint64_t>{16, 7, 200});
  CHECK((*pager)->faults() == 4);
}

TEST_CASE("A uffd restore prefetches the snapshot's working set; a bad one is named and skipped") {
  PagerFixture f;
  f.file.reset();
  const uint64_t ram_pages = (4 << 20) / 4096;
  auto s = ReadSnapshot(f.dir);
  REQUIRE(s.ok());
  REQUIRE(WriteWorkingSet(f.dir, std::vector<uint64_t>{19, 7}, ram_pages).ok());
  auto r = RestoreMemory(f.dir, *s, RestoreMode::kUffd, {});
  if (!r.ok() && r.status().code() == absl::StatusCode::kFailedPrecondition) {
    KINDLING_SKIP(std::string(r.status().message()));
  }
  REQUIRE(r.ok());
  CHECK(r->working_set.ok());
  REQUIRE(r->pager->WaitRetired(absl::Seconds(5)));
  CHECK(r->pager->prefetched() == 2);
  CHECK(r->pager->filled() == 3);
  CHECK(*r->memory->ReadObj<uint8_t>(GuestAddress(19 * 4096)) == 19);

  REQUIRE(WriteWorkingSet(f.dir, std::vector<uint64_t>{1}, ram_pages + 1).ok());  // not this RAM
  auto bad = RestoreMemory(f.dir, *s, RestoreMode::kUffd, {});
  REQUIRE(bad.ok());
  CHECK(std::string(bad->working_set.message()).find("working-set: working set: for 1025") !=
        std::string::npos);
  REQUIRE(bad->pager->WaitRetired(absl::Seconds(5)));
  CHECK(bad->pager->prefetched() == 0);
  CHECK(*bad->memory->ReadObj<uint8_t>(GuestAddress(7 * 4096)) == 7);
}
