#include "vcpu/cpuid.h"

#include <asm/kvm_para.h>

#include <catch2/catch.hpp>

using namespace vcpu;

namespace {

CpuidTable SampleTable() {
  CpuidTable t(5);
  t[0].function = 1;
  t[0].ebx = 0x00000800;
  t[1].function = 0xb;
  t[1].index = 0;
  t[1].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  t[2].function = 0xb;
  t[2].index = 1;
  t[2].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  t[3].function = kKvmFeaturesLeaf;
  t[3].eax = (1u << KVM_FEATURE_CLOCKSOURCE) | (1u << KVM_FEATURE_CLOCKSOURCE2) |
             (1u << KVM_FEATURE_STEAL_TIME) | (1u << KVM_FEATURE_PV_EOI) |
             (1u << KVM_FEATURE_PV_UNHALT) | (1u << KVM_FEATURE_PV_TLB_FLUSH) |
             (1u << KVM_FEATURE_PV_SEND_IPI) | (1u << KVM_FEATURE_ASYNC_PF);
  t[4].function = 0x8000001e;
  return t;
}

}  // namespace

TEST_CASE("PV-EOI off clears exactly its bit") {
  CpuidTable t = SampleTable();
  uint32_t before = FindCpuid(t, kKvmFeaturesLeaf)->eax;
  PvFeatures f;
  f.pv_eoi = false;
  ApplyPvFeatures(t, f);
  REQUIRE(FindCpuid(t, kKvmFeaturesLeaf)->eax == (before & ~(1u << KVM_FEATURE_PV_EOI)));
}

TEST_CASE("Every PV switch off leaves only features without a switch") {
  CpuidTable t = SampleTable();
  PvFeatures off{false, false, false, false, false, false};
  ApplyPvFeatures(t, off);
  REQUIRE(FindCpuid(t, kKvmFeaturesLeaf)->eax == (1u << KVM_FEATURE_ASYNC_PF));
}

TEST_CASE("Defaults keep everything KVM offers; missing ones are named") {
  CpuidTable t = SampleTable();
  uint32_t before = FindCpuid(t, kKvmFeaturesLeaf)->eax;
  ApplyPvFeatures(t, PvFeatures{});
  REQUIRE(FindCpuid(t, kKvmFeaturesLeaf)->eax == before);
  REQUIRE(MissingPvFeatures(t, PvFeatures{}).empty());
  FindCpuid(t, kKvmFeaturesLeaf)->eax &= ~(1u << KVM_FEATURE_PV_EOI);
  auto missing = MissingPvFeatures(t, PvFeatures{});
  REQUIRE(missing == std::vector<std::string>{"pv-eoi"});
}

TEST_CASE("SetTopology gives each vCPU its APIC ID and the CPU count") {
  CpuidTable t = SampleTable();
  SetTopology(t, 5, 8);
  REQUIRE((FindCpuid(t, 1)->ebx >> 24) == 5);
  REQUIRE(((FindCpuid(t, 1)->ebx >> 16) & 0xff) == 8);
  REQUIRE((FindCpuid(t, 1)->ebx & 0xffff) == 0x0800);  // CLFLUSH size kept
  REQUIRE((FindCpuid(t, 1)->ecx >> 31) == 1);           // hypervisor bit
  REQUIRE((FindCpuid(t, 1)->edx >> 28 & 1) == 1);       // HTT
  REQUIRE(FindCpuid(t, 0xb, 0)->edx == 5);
  REQUIRE(FindCpuid(t, 0xb, 1)->edx == 5);
  REQUIRE(FindCpuid(t, 0xb, 1)->eax == 3);  // 8 CPUs -> 3 bits
  REQUIRE(FindCpuid(t, 0xb, 1)->ebx == 8);
  REQUIRE(FindCpuid(t, 0x8000001e)->eax == 5);
}

TEST_CASE("FindCpuid respects significant subleaves") {
  CpuidTable t = SampleTable();
  REQUIRE(FindCpuid(t, 0xb, 1) == &t[2]);
  REQUIRE(FindCpuid(t, 0xb, 2) == nullptr);
  REQUIRE(FindCpuid(t, 1, 7) == &t[0]);  // no significant index: any subleaf
  REQUIRE(FindCpuid(t, 0x12345) == nullptr);
}
