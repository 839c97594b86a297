// CPU pools on real CPU generations: profiles (testdata/profiles, derived
// from QEMU's model table; see its README), baselines, the pre-migration
// check and restriction.
#include <algorithm>
#include <string>
#include <vector>

#include "catch2/catch.hpp"
#include "vcpu/cpu_baseline.h"
#include "vcpu/cpu_compat.h"
#include "vcpu/cpu_features.h"
#include "vcpu/cpu_profile.h"

namespace vcpu {
namespace {

using R = CpuidRegister;

CpuProfile Load(const std::string& name) {
  auto p = LoadCpuProfileFile("libs/vcpu/testdata/profiles/" + name + ".json");
  INFO(p.status().ToString());
  REQUIRE(p.ok());
  return *p;
}

uint32_t Reg(const CpuidTable& t, uint32_t leaf, uint32_t subleaf, R r) {
  const kvm_cpuid_entry2* e = FindCpuid(t, leaf, subleaf);
  if (e == nullptr) return 0;
  switch (r) {
    case R::kEax: return e->eax;
    case R::kEbx: return e->ebx;
    case R::kEcx: return e->ecx;
    case R::kEdx: return e->edx;
  }
  return 0;
}

bool Has(const CpuidTable& t, uint32_t leaf, uint32_t subleaf, R r, int bit) {
  return Reg(t, leaf, subleaf, r) & (1u << bit);
}

// What a guest booted on `host` with the pool's template sees.
CpuidTable GuestOn(const CpuProfile& host, const Baseline& b) {
  CpuidTable t = ProfileCpuid(host);
  absl::Status s = ApplyCpuTemplate(t, b.cpu_template);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return t;
}

const char* kAll[] = {"skylake_server", "sapphire_rapids", "epyc_rome", "epyc_genoa"};

TEST_CASE("The shipped profiles are the CPUs they say") {
  CpuProfile sky = Load("skylake_server");
  CpuProfile rome = Load("epyc_rome");
  REQUIRE(sky.vendor() == "GenuineIntel");
  REQUIRE(rome.vendor() == "AuthenticAMD");
  REQUIRE(rome.family() == 0x17);
  REQUIRE(Load("epyc_genoa").family() == 0x19);
  REQUIRE(Has(ProfileCpuid(sky), 7, 0, R::kEbx, 16));    // avx512f
  REQUIRE(!Has(ProfileCpuid(rome), 7, 0, R::kEbx, 16));
  REQUIRE(Has(ProfileCpuid(rome), 0x80000001, 0, R::kEcx, 6));  // sse4a
  REQUIRE(!Has(ProfileCpuid(sky), 0x80000001, 0, R::kEcx, 6));
}

TEST_CASE("A profile survives JSON, and its summary comes from CPUID") {
  CpuProfile p = Load("sapphire_rapids");
  p.set_vendor("forged");
  auto q = ParseCpuProfileJson(CpuProfileToJson(p));
  REQUIRE(q.ok());
  REQUIRE(q->vendor() == "GenuineIntel");
  REQUIRE(q->cpuid_size() == p.cpuid_size());
  REQUIRE(ProfileCpuid(*q).size() == ProfileCpuid(p).size());
  REQUIRE(q->xsave_max_bytes() == Reg(ProfileCpuid(p), 0xd, 0, R::kEcx));
}

TEST_CASE("Bad profiles are refused with the reason") {
  auto expect = [](const std::string& json, const std::string& why) {
    auto p = ParseCpuProfileJson(json);
    INFO(json);
    REQUIRE(!p.ok());
    INFO(p.status().ToString());
    REQUIRE(p.status().message().find(why) != std::string::npos);
  };
  std::string l01 = R"({"leaf":0,"eax":13},{"leaf":1,"eax":1})";
  expect(R"({"cpuid":[)" + l01 + "]}", "formatVersion is missing");
  expect(R"({"formatVersion":9,"cpuid":[)" + l01 + "]}", "newer");
  expect(R"({"formatVersion":1,"cpuid":[{"leaf":1}]})", "no leaf 0");
  expect(R"({"formatVersion":1,"cpuid":[)" + l01 + R"(,{"leaf":1}]})", "appears twice");
  expect(R"({"formatVersion":1,"bogus":1})", "bogus");
  expect(R"({"formatVersion":1,"cpuid":[{"leaf":-1}]})", "CPU profile");
  expect(std::string(kMaxProfileBytes + 1, ' '), "at most");
}

TEST_CASE("An Intel and an AMD host: the baseline keeps what both have") {
  std::vector<CpuProfile> pool = {Load("skylake_server"), Load("epyc_rome")};
  auto b = ComputeBaseline(pool);
  REQUIRE(b.ok());
  for (const CpuProfile& host : pool) {
    CpuidTable g = GuestOn(host, *b);
    INFO(host.host());
    CHECK(!Has(g, 7, 0, R::kEbx, 16));          // avx512f: Skylake only
    CHECK(!Has(g, 0x80000001, 0, R::kEcx, 6));  // sse4a: AMD only
    CHECK(Has(g, 0x80000001, 0, R::kEcx, 0));   // lahf_lm: both, one bit
    CHECK(Has(g, 0x80000001, 0, R::kEcx, 5));   // lzcnt (Intel) = abm (AMD)
    CHECK(Has(g, 7, 0, R::kEbx, 5));            // avx2
    CHECK(Has(g, 1, 0, R::kEcx, 28));           // avx
    CHECK((Reg(g, 0xd, 0, R::kEax) & 0xe0) == 0);  // no AVX-512 XSAVE state
    CHECK(Reg(g, 0xd, 0, R::kEcx) == std::min(Reg(ProfileCpuid(pool[0]), 0xd, 0, R::kEcx),
                                                Reg(ProfileCpuid(pool[1]), 0xd, 0, R::kEcx)));
    CHECK(Reg(g, 0, 0, R::kEbx) == Reg(ProfileCpuid(host), 0, 0, R::kEbx));  // own vendor
  }
  // AMD's 0x80000001 EDX copies of leaf-1 bits stay on the AMD host.
  CHECK(Has(GuestOn(pool[1], *b), 0x80000001, 0, R::kEdx, 0));  // fpu
  CHECK(Has(GuestOn(pool[1], *b), 0x80000001, 0, R::kEdx, 11));  // syscall
  bool said_vendor = std::any_of(b->notes.begin(), b->notes.end(), [](const std::string& n) {
    return n.find("AuthenticAMD, GenuineIntel") != std::string::npos;
  });
  CHECK(said_vendor);
}

TEST_CASE("Under the baseline, a guest can move between any two hosts of the pool") {
  std::vector<CpuProfile> pool;
  for (const char* n : kAll) pool.push_back(Load(n));
  auto b = ComputeBaseline(pool);
  REQUIRE(b.ok());
  for (const CpuProfile& from : pool) {
    CpuidTable g = GuestOn(from, *b);
    for (const CpuProfile& to : pool) {
      INFO(from.host() << " -> " << to.host());
      std::vector<std::string> missing = MissingCpuFeatures(g, ProfileCpuid(to));
      INFO((missing.empty() ? "" : missing[0]));
      CHECK(missing.empty());
    }
  }
}

TEST_CASE("Nothing every host has is removed, nothing one host lacks is left") {
  std::vector<CpuProfile> pool;
  for (const char* n : kAll) pool.push_back(Load(n));
  auto b = ComputeBaseline(pool);
  REQUIRE(b.ok());
  const uint32_t leaf = 7;
  const R regs[] = {R::kEbx, R::kEcx, R::kEdx};
  for (R r : regs) {
    uint32_t all = ~0u;
    for (const CpuProfile& p : pool) all &= Reg(ProfileCpuid(p), leaf, 0, r);
    CpuidRegisterRule rule = RuleFor(leaf, 0, r);
    for (const CpuProfile& p : pool) {
      uint32_t seen = Reg(GuestOn(p, *b), leaf, 0, r) & ~rule.dynamic;
      INFO(p.host() << " leaf 7 " << RegisterName(r));
      CHECK(seen == (all & ~rule.hidden & ~rule.dynamic));
    }
  }
}

TEST_CASE("Host-specific leaves are hidden, even from a pool of one") {
  CpuProfile sky = Load("skylake_server");
  CpuidTable t = ProfileCpuid(sky);
  kvm_cpuid_entry2 pmu = {};
  pmu.function = 0xa;
  pmu.eax = 0x07300404;
  t.push_back(pmu);
  t.back().flags = 0;
  CpuProfile with_pmu = ProfileFromCpuid(t, "with-pmu");
  with_pmu.set_tsc_scaling(true);
  std::vector<CpuProfile> pool = {with_pmu};
  auto b = ComputeBaseline(pool);
  REQUIRE(b.ok());
  CpuidTable g = GuestOn(with_pmu, *b);
  CHECK(Reg(g, 0xa, 0, R::kEax) == 0);
  CHECK(Has(g, 7, 0, R::kEbx, 16));  // avx512f stays in a pool of one Skylake
}

CpuProfile WithTsc(CpuProfile p, uint64_t khz, bool scaling) {
  p.set_tsc_khz(khz);
  p.set_tsc_scaling(scaling);
  return p;
}

TEST_CASE("Invariant TSC and TSC deadline pass only where the TSC can follow the guest") {
  CpuProfile a = Load("skylake_server");
  CpuProfile c = Load("sapphire_rapids");
  REQUIRE(Has(ProfileCpuid(a), 0x80000007, 0, R::kEdx, 8));
  REQUIRE(Has(ProfileCpuid(a), 1, 0, R::kEcx, 24));
  std::vector<CpuProfile> differ = {WithTsc(a, 2100000, false), WithTsc(c, 2900000, false)};
  auto b = ComputeBaseline(differ);
  REQUIRE(b.ok());
  CHECK(!Has(GuestOn(differ[0], *b), 0x80000007, 0, R::kEdx, 8));
  CHECK(!Has(GuestOn(differ[0], *b), 1, 0, R::kEcx, 24));
  std::vector<CpuProfile> same = {WithTsc(a, 2100000, false), WithTsc(c, 2100000, false)};
  b = ComputeBaseline(same);
  REQUIRE(b.ok());
  CHECK(Has(GuestOn(same[1], *b), 0x80000007, 0, R::kEdx, 8));
  CHECK(Has(GuestOn(same[1], *b), 1, 0, R::kEcx, 24));
  std::vector<CpuProfile> scale = {WithTsc(a, 2100000, true), WithTsc(c, 2900000, true)};
  b = ComputeBaseline(scale);
  REQUIRE(b.ok());
  CHECK(Has(GuestOn(scale[1], *b), 0x80000007, 0, R::kEdx, 8));
}

TEST_CASE("ARCH_CAPABILITIES takes the bits every host reports") {
  CpuProfile a = Load("skylake_server"), c = Load("sapphire_rapids");
  a.clear_feature_msrs();
  c.clear_feature_msrs();
  auto* m = a.add_feature_msrs();
  m->set_index(kArchCapabilitiesMsr);
  m->set_value(0b1101);
  m = c.add_feature_msrs();
  m->set_index(kArchCapabilitiesMsr);
  m->set_value(0b0111);
  std::vector<CpuProfile> pool = {a, c};
  auto b = ComputeBaseline(pool);
  REQUIRE(b.ok());
  REQUIRE(b->cpu_template.msr_modifiers.size() == 1);
  CHECK(b->cpu_template.msr_modifiers[0].bitmap.Apply(~0ull) == 0b0101);
}

TEST_CASE("The baseline's JSON is a CPU template kindling reads back") {
  std::vector<CpuProfile> pool = {Load("epyc_genoa"), Load("sapphire_rapids")};
  auto b = ComputeBaseline(pool);
  REQUIRE(b.ok());
  std::string json = CpuTemplateToJson(b->cpu_template, b->notes);
  auto t = ParseCpuTemplateJson(json);
  INFO(json.substr(0, 400));
  REQUIRE(t.ok());
  REQUIRE(t->cpuid_modifiers.size() == b->cpu_template.cpuid_modifiers.size());
  CpuidTable via_json = ProfileCpuid(pool[0]);
  REQUIRE(ApplyCpuTemplate(via_json, *t).ok());
  CpuidTable direct = GuestOn(pool[0], *b);
  for (size_t i = 0; i < direct.size(); ++i) {
    CHECK(via_json[i].eax == direct[i].eax);
    CHECK(via_json[i].ebx == direct[i].ebx);
    CHECK(via_json[i].ecx == direct[i].ecx);
    CHECK(via_json[i].edx == direct[i].edx);
  }
}

TEST_CASE("The pre-migration check names each missing feature and the host") {
  CpuidTable sky = ProfileCpuid(Load("skylake_server"));
  CpuidTable rome = ProfileCpuid(Load("epyc_rome"));
  absl::Status s = CheckGuestCpuid(sky, rome, "B");
  REQUIRE(s.code() == absl::StatusCode::kFailedPrecondition);
  std::string msg(s.message());
  INFO(msg);
  CHECK(msg.find("avx512f (leaf 0x7 ebx bit 16)") != std::string::npos);
  CHECK(msg.find("not supported by host B") != std::string::npos);
  CHECK(msg.find("osxsave") == std::string::npos);  // OS-controlled bits are not compared
  CHECK(CheckGuestCpuid(sky, sky, "A").ok());
}

TEST_CASE("AMD's copies of leaf-1 bits are satisfied by an Intel host's leaf 1") {
  CpuidTable amd = ProfileCpuid(Load("epyc_rome"));
  CpuidTable intel = ProfileCpuid(Load("skylake_server"));
  REQUIRE(Has(amd, 0x80000001, 0, R::kEdx, 0));     // fpu copy
  REQUIRE(!Has(intel, 0x80000001, 0, R::kEdx, 0));  // Intel leaves it clear
  for (const std::string& m : MissingCpuFeatures(amd, intel)) {
    INFO(m);
    CHECK(m.find("leaf 0x80000001 edx bit 0)") == std::string::npos);
  }
}

TEST_CASE("Address widths: a guest needing more than the host has is refused") {
  CpuidTable guest = ProfileCpuid(Load("epyc_rome"));
  CpuidTable host = guest;
  kvm_cpuid_entry2* e = FindCpuid(host, 0x80000008, 0);
  REQUIRE(e != nullptr);
  e->eax = (e->eax & ~0xffu) | 39;
  std::vector<std::string> missing = MissingCpuFeatures(guest, host);
  REQUIRE(missing.size() == 1);
  CHECK(missing[0].find("physical address bits 48") != std::string::npos);
  CHECK(missing[0].find("the host has 39") != std::string::npos);
}

kvm_msr_entry Msr(uint32_t index, uint64_t data) {
  kvm_msr_entry e = {};
  e.index = index;
  e.data = data;
  return e;
}

TEST_CASE("ARCH_CAPABILITIES: a guest told it is not vulnerable is refused where it is") {
  std::vector<kvm_msr_entry> guest = {Msr(0x10a, 1 << 5 | 1 << 2 | 1 << 0)};  // mds_no rsba rdcl_no
  std::vector<kvm_msr_entry> host = {Msr(0x10a, 1 << 0)};
  std::vector<std::string> missing = MissingMsrFeatures(guest, host);
  REQUIRE(missing.size() == 1);  // RSBA asks for more mitigation: not a loss
  CHECK(missing[0] == "mds_no (MSR 0x10a bit 5)");
  CpuidTable t = ProfileCpuid(Load("skylake_server"));
  absl::Status s = CheckGuestCpu(t, guest, t, host, "B");
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(s.message()).find("mds_no (MSR 0x10a bit 5) is not supported by host B") !=
        std::string::npos);
  CHECK(CheckGuestCpu(t, guest, t, guest, "B").ok());
  CHECK(MissingMsrFeatures(guest, {}).empty());  // a host without the MSR: not compared
}

TEST_CASE("Feature names follow /proc/cpuinfo") {
  CHECK(FeatureName(7, 0, R::kEbx, 16) == "avx512f");
  CHECK(FeatureName(0x80000001, 0, R::kEcx, 0) == "lahf_lm");
  CHECK(FeatureName(0x80000001, 0, R::kEcx, 5) == "lzcnt/abm");
  CHECK(DescribeBit(7, 0, R::kEbx, 16) == "avx512f (leaf 0x7 ebx bit 16)");
  CHECK(DescribeBit(0x12345, 0, R::kEax, 3) == "leaf 0x12345 eax bit 3");
}

TEST_CASE("A baseline needs a bounded, non-empty pool") {
  std::vector<CpuProfile> none;
  CHECK(!ComputeBaseline(none).ok());
  std::vector<CpuProfile> many(kMaxPoolProfiles + 1, Load("epyc_rome"));
  CHECK(!ComputeBaseline(many).ok());
}

}  // namespace
}  // namespace vcpu

namespace vcpu {
namespace {

TEST_CASE("XSAVE state laid out differently on Intel and AMD is dropped with its features") {
  // Genoa packs AVX-512 and PKRU state right after AVX; Sapphire Rapids
  // leaves MPX's room: the same feature, two XSAVE layouts.
  std::vector<CpuProfile> pool = {Load("epyc_genoa"), Load("sapphire_rapids")};
  REQUIRE(Has(ProfileCpuid(pool[0]), 7, 0, R::kEbx, 16));
  REQUIRE(Has(ProfileCpuid(pool[1]), 7, 0, R::kEbx, 16));
  auto b = ComputeBaseline(pool);
  REQUIRE(b.ok());
  for (const CpuProfile& host : pool) {
    CpuidTable g = GuestOn(host, *b);
    INFO(host.host());
    CHECK(!Has(g, 7, 0, R::kEbx, 16));  // avx512f
    CHECK(!Has(g, 7, 0, R::kEcx, 3));   // pku
    CHECK((Reg(g, 0xd, 0, R::kEax) & 0x2e0) == 0);  // opmask, zmm, pkru
    CHECK(Has(g, 7, 0, R::kEbx, 5));    // avx2: AVX state sits at 576 on both
    CHECK((Reg(g, 0xd, 0, R::kEax) & 0x7) == 0x7);
  }
  bool said = std::any_of(b->notes.begin(), b->notes.end(), [](const std::string& n) {
    return n.find("xsave_opmask (xsave component 5) hidden") != std::string::npos;
  });
  CHECK(said);
  // Without the baseline, the check names the layout, not only features.
  std::vector<std::string> missing =
      MissingCpuFeatures(ProfileCpuid(pool[0]), ProfileCpuid(pool[1]));
  bool layout = std::any_of(missing.begin(), missing.end(), [](const std::string& m) {
    return m.find("xsave_zmm_hi256 (xsave component 6) laid out as 512 bytes at offset 896 "
                  "(the host: 512 at 1152)") != std::string::npos;
  });
  CHECK(layout);
}

}  // namespace
}  // namespace vcpu
