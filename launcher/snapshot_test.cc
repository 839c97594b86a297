// MicroVm::Restore refuses what it must before touching KVM: a layout that
// is not the launcher's, virtio devices in the config, a damaged directory.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

#include "launcher/microvm.h"
#include "migration/snapshot.h"
#include "migration/state_codec.h"
#include "vm-memory/layout.h"

namespace v1 = kindling::migration::v1;
using kindling::MicroVm;
using kindling::VmConfig;

namespace {

std::string Dir(const char* name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name;
}

// A well-formed one-vCPU snapshot of RAM laid out as `layout`.
std::string Write(const char* name, const std::vector<vm_memory::RegionSpec>& layout) {
  auto mem = vm_memory::GuestMemory::Create(layout);
  REQUIRE(mem.ok());
  v1::Snapshot s;
  s.mutable_machine()->set_vcpus(1);
  s.mutable_machine()->set_irqchip(v1::IRQCHIP_MODE_SPLIT);
  vcpu::VcpuState st;
  st.xsave.assign(4096, 0);
  kvm_cpuid_entry2 leaf = {};
  *s.add_vcpus() = migration::EncodeVcpu(st, std::span<const kvm_cpuid_entry2>(&leaf, 1));
  s.set_kvm_clock(migration::EncodeClock(kvm_clock_data{}));
  *s.mutable_irqchip()->mutable_ioapic() = migration::EncodeIoapic(vcpu::Ioapic::State{});
  std::string dir = Dir(name);
  REQUIRE(migration::WriteSnapshot(dir, s, **mem).ok());
  return dir;
}

VmConfig Host() {
  VmConfig c;
  c.kvm_device = "/nonexistent/kvm";  // reaching KVM would fail differently
  return c;
}

}  // namespace

TEST_CASE("Restore refuses RAM that is not where the launcher puts it") {
  std::string dir = Write("odd_layout", {{vm_memory::GuestAddress(0xfec00000), 1 << 20}});
  auto vm = MicroVm::Restore(Host(), dir);
  REQUIRE(vm.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(vm.status().message()).find("not kindling's x86 layout") !=
        std::string::npos);
}

TEST_CASE("Restore refuses virtio devices in the config, before KVM") {
  std::string dir = Write("good_layout", vm_memory::X86RamLayout(16 << 20));
  VmConfig c = Host();
  c.virtio.rng = true;
  auto vm = MicroVm::Restore(c, dir);
  REQUIRE(vm.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(vm.status().message()).find("virtio devices") != std::string::npos);
  // The same snapshot with a plain config gets as far as opening KVM.
  vm = MicroVm::Restore(Host(), dir);
  REQUIRE_FALSE(vm.ok());
  CHECK(std::string(vm.status().message()).find("/nonexistent/kvm") != std::string::npos);
}
