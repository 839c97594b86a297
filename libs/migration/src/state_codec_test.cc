#include "migration/state_codec.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <string>

using namespace migration;

namespace {

// A vCPU state whose every structure holds a distinct byte pattern.
vcpu::VcpuState Patterned() {
  vcpu::VcpuState st;
  auto fill = [](auto& obj, uint8_t seed) {
    auto* p = reinterpret_cast<uint8_t*>(&obj);
    for (size_t i = 0; i < sizeof(obj); ++i) p[i] = static_cast<uint8_t>(seed + i * 7);
  };
  fill(st.regs, 1);
  fill(st.sregs, 2);
  fill(st.fpu, 3);
  fill(st.xcrs, 4);
  fill(st.debugregs, 5);
  fill(st.lapic, 6);
  fill(st.events, 7);
  fill(st.mp_state, 8);
  st.xsave.assign(4096, 0x5a);
  st.msrs = {{0x174, 0, 0x10}, {0x4b564d01, 0, 0x1234567800000001ULL}};
  return st;
}

template <typename T>
bool SameBytes(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

}  // namespace

TEST_CASE("A vCPU's state and CPUID survive encoding") {
  vcpu::VcpuState st = Patterned();
  kvm_cpuid_entry2 leaf = {};
  leaf.function = 0x40000001;
  leaf.eax = 0xabcd;
  v1::Vcpu m = EncodeVcpu(st, std::span<const kvm_cpuid_entry2>(&leaf, 1));
  auto back = DecodeVcpu(m);
  REQUIRE(back.ok());
  CHECK(SameBytes(back->regs, st.regs));
  CHECK(SameBytes(back->sregs, st.sregs));
  CHECK(SameBytes(back->fpu, st.fpu));
  CHECK(SameBytes(back->xcrs, st.xcrs));
  CHECK(SameBytes(back->debugregs, st.debugregs));
  CHECK(SameBytes(back->lapic, st.lapic));
  CHECK(SameBytes(back->events, st.events));
  CHECK(SameBytes(back->mp_state, st.mp_state));
  CHECK(back->xsave == st.xsave);
  REQUIRE(back->msrs.size() == 2);
  CHECK(back->msrs[1].index == 0x4b564d01);
  CHECK(back->msrs[1].data == 0x1234567800000001ULL);
  auto cpuid = DecodeCpuid(m);
  REQUIRE(cpuid.ok());
  REQUIRE(cpuid->size() == 1);
  CHECK((*cpuid)[0].function == 0x40000001);
  CHECK((*cpuid)[0].eax == 0xabcd);
}

TEST_CASE("A vCPU record of the wrong size is refused, naming the field") {
  kvm_cpuid_entry2 leaf = {};
  v1::Vcpu good = EncodeVcpu(Patterned(), std::span<const kvm_cpuid_entry2>(&leaf, 1));
  v1::Vcpu m = good;
  m.set_lapic(m.lapic() + "x");
  auto r = DecodeVcpu(m);
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()).find("vcpu lapic: 1025 bytes") != std::string::npos);

  m = good;
  m.set_xsave(std::string(100, 'x'));
  r = DecodeVcpu(m);
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()).find("vcpu xsave") != std::string::npos);

  m = good;
  m.set_xsave(std::string(kMaxXsaveBytes + 1, 'x'));
  CHECK_FALSE(DecodeVcpu(m).ok());

  m = good;
  for (size_t i = 0; i <= kMaxMsrs; ++i) m.add_msrs()->set_index(i);
  r = DecodeVcpu(m);
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()).find("vcpu msrs") != std::string::npos);

  m = good;
  m.set_cpuid(std::string(sizeof(kvm_cpuid_entry2) + 1, 'x'));
  CHECK_FALSE(DecodeCpuid(m).ok());
  m.set_cpuid("");
  CHECK_FALSE(DecodeCpuid(m).ok());
  m.set_cpuid(std::string(sizeof(kvm_cpuid_entry2) * (kMaxCpuidEntries + 1), 'x'));
  CHECK_FALSE(DecodeCpuid(m).ok());
}

TEST_CASE("The clock and the kernel irqchip round-trip; chip ids are checked") {
  kvm_clock_data clock = {};
  clock.clock = 123456789;
  auto c = DecodeClock(EncodeClock(clock));
  REQUIRE(c.ok());
  CHECK(c->clock == 123456789);
  CHECK_FALSE(DecodeClock("short").ok());

  KernelIrqchipState st = {};
  st.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  st.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  st.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  st.ioapic.chip.ioapic.redirtbl[3].bits = 0xabc;
  st.pit.channels[0].count = 42;
  auto back = DecodeKernelIrqchip(EncodeKernelIrqchip(st));
  REQUIRE(back.ok());
  CHECK(back->ioapic.chip.ioapic.redirtbl[3].bits == 0xabc);
  CHECK(back->pit.channels[0].count == 42);

  st.pic_slave.chip_id = KVM_IRQCHIP_IOAPIC;  // would overwrite the IOAPIC
  auto bad = DecodeKernelIrqchip(EncodeKernelIrqchip(st));
  REQUIRE_FALSE(bad.ok());
  CHECK(std::string(bad.status().message()).find("chip ids") != std::string::npos);
}

TEST_CASE("The userspace IOAPIC's state round-trips and is bounded") {
  vcpu::Ioapic::State st = vcpu::Ioapic(0, nullptr).SaveState();  // reset state
  st.id = 2;
  st.select = 0x13;
  st.redirection[4] = 0x0100'0000'0000'0031ULL;
  st.level[4] = true;
  auto back = DecodeIoapic(EncodeIoapic(st));
  REQUIRE(back.ok());
  CHECK(back->id == 2);
  CHECK(back->select == 0x13);
  CHECK(back->redirection[4] == st.redirection[4]);
  CHECK(back->level[4]);
  CHECK_FALSE(back->level[5]);
  vcpu::Ioapic restored(0, nullptr);
  restored.RestoreState(*back);
  CHECK(restored.redirection(4) == st.redirection[4]);
  CHECK(restored.redirection(5) == (1ULL << 16));  // masked, as at reset

  v1::UserspaceIoapic m = EncodeIoapic(st);
  m.add_redirection(0);
  CHECK_FALSE(DecodeIoapic(m).ok());
  m = EncodeIoapic(st);
  m.set_version(2);
  auto v = DecodeIoapic(m);
  REQUIRE_FALSE(v.ok());
  CHECK(std::string(v.status().message()).find("version 2") != std::string::npos);
  m = EncodeIoapic(st);
  m.set_id(256);
  CHECK_FALSE(DecodeIoapic(m).ok());
}

TEST_CASE("The serial port's state round-trips and is bounded") {
  vcpu::Serial::State st;
  st.ier = 0x03;
  st.lcr = 0x1b;
  st.scr = 0x77;
  st.input = "queued";
  auto back = DecodeSerial(EncodeSerial(st));
  REQUIRE(back.ok());
  CHECK(back->ier == 0x03);
  CHECK(back->lcr == 0x1b);
  CHECK(back->scr == 0x77);
  CHECK(back->input == "queued");

  v1::Serial m = EncodeSerial(st);
  m.set_lcr(0x100);
  CHECK_FALSE(DecodeSerial(m).ok());
  m = EncodeSerial(st);
  m.set_input(std::string(vcpu::Serial::kInputCapacity + 1, 'a'));
  CHECK_FALSE(DecodeSerial(m).ok());
}

TEST_CASE("A serial port restored from a saved state behaves as the original") {
  std::string out;
  vcpu::Serial a([&](uint8_t b) { out.push_back(b); }, nullptr);
  uint8_t lcr = 0x1b, scr = 0x42;
  a.Write(3, std::span<const uint8_t>(&lcr, 1));
  a.Write(7, std::span<const uint8_t>(&scr, 1));
  a.EnqueueInput("hi");
  auto st = DecodeSerial(EncodeSerial(a.SaveState()));
  REQUIRE(st.ok());
  vcpu::Serial b([&](uint8_t c) { out.push_back(c); }, nullptr);
  b.RestoreState(*st);
  uint8_t v = 0;
  b.Read(7, std::span<uint8_t>(&v, 1));
  CHECK(v == 0x42);
  b.Read(3, std::span<uint8_t>(&v, 1));
  CHECK(v == 0x1b);
  CHECK(b.InputQueued() == 2);
  b.Read(0, std::span<uint8_t>(&v, 1));
  CHECK(v == 'h');
}
