// RestoreMode::kUffd: pages filled by UffdPager on first touch. Its own
// target, run outside Bazel's sandbox: userfaultfd with kernel-mode faults
// needs privileges a sandboxed (user-namespaced) test does not have.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

#include "kindling/test_skip.h"
#include "migration/snapshot.h"
#include "migration/state_codec.h"

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

TEST_CASE("A uffd restore fills each page from the memory file on first touch") {
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
  CHECK(r->pager->faults() == 0);
  CHECK(*r->memory->ReadObj<uint8_t>(GuestAddress(0x7123)) == 0x5c);  // from the file
  CHECK(*r->memory->ReadObj<uint8_t>(GuestAddress(0x200000)) == 0);   // a hole
  REQUIRE(r->memory->WriteObj<uint8_t>(GuestAddress(0x7000), 1).ok());
  CHECK(*r->memory->ReadObj<uint8_t>(GuestAddress(0x7000)) == 1);     // stays written
  CHECK(r->pager->faults() == 2);
}
