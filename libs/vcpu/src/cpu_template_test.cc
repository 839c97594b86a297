#include "vcpu/cpu_template.h"

#include <catch2/catch.hpp>
#include <string>

using namespace vcpu;

namespace {

kvm_cpuid_entry2 Entry(uint32_t leaf, uint32_t subleaf, uint32_t flags,
                       uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx) {
  kvm_cpuid_entry2 e = {};
  e.function = leaf;
  e.index = subleaf;
  e.flags = flags;
  e.eax = eax;
  e.ebx = ebx;
  e.ecx = ecx;
  e.edx = edx;
  return e;
}

bool ErrorMentions(const absl::Status& s, const std::string& text) {
  return !s.ok() && std::string(s.message()).find(text) != std::string::npos;
}

}  // namespace

TEST_CASE("ParseBitmap: 0, 1, x, underscores and left padding with x") {
  auto m = ParseBitmap("0b1x0_1", 32);
  REQUIRE(m.ok());
  REQUIRE(m->mask == 0b1011);
  REQUIRE(m->bits == 0b1001);
  REQUIRE(m->Apply(0xfffffff0) == 0xfffffff9);
  REQUIRE(m->Apply(0x4) == 0xd);  // the x bit (bit 2) is kept
}

TEST_CASE("ParseBitmap rejects bad bitmaps with the reason") {
  REQUIRE(ErrorMentions(ParseBitmap("1010", 32).status(), "must start with 0b"));
  REQUIRE(ErrorMentions(ParseBitmap("0b102", 32).status(), "'2'"));
  REQUIRE(ErrorMentions(ParseBitmap(std::string("0b") + std::string(33, '1'), 32).status(),
                        "more than 32 bits"));
  REQUIRE(ParseBitmap(std::string("0b") + std::string(64, '1'), 64).ok());
  REQUIRE_FALSE(ParseBitmap("0b", 32).ok());
  REQUIRE_FALSE(ParseBitmap("0b___", 32).ok());
}

TEST_CASE("Firecracker's documented example parses") {
  auto t = ParseCpuTemplateJson(R"({
    "kvm_capabilities": [],
    "cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0,
      "modifiers": [{"register": "eax",
                     "bitmap": "0bxxxx000000000011xx00011011110010"}]}],
    "msr_modifiers": [{"addr": "0x10a", "bitmap": "0b0"}]})");
  REQUIRE(t.ok());
  REQUIRE(t->cpuid_modifiers.size() == 1);
  const CpuidModifier& m = t->cpuid_modifiers[0];
  REQUIRE(m.leaf == 1);
  REQUIRE(m.modifiers[0].reg == CpuidRegister::kEax);
  REQUIRE(m.modifiers[0].bitmap.mask == 0x0fff3fff);
  REQUIRE(m.modifiers[0].bitmap.bits == 0x000306f2);
  REQUIRE(t->msr_modifiers.size() == 1);
  REQUIRE(t->msr_modifiers[0].addr == 0x10a);
}

TEST_CASE("Template JSON errors name the field") {
  REQUIRE(ErrorMentions(ParseCpuTemplateJson("{").status(), "not valid JSON"));
  REQUIRE(ErrorMentions(ParseCpuTemplateJson(R"({"cpuid_modifiers":[{"subleaf":"0"}]})").status(),
                        "cpuid_modifiers[0]: missing field 'leaf'"));
  REQUIRE(ErrorMentions(
      ParseCpuTemplateJson(R"({"cpuid_modifiers":[{"leaf":"0xzz","modifiers":[]}]})").status(),
      "cpuid_modifiers[0].leaf"));
  REQUIRE(ErrorMentions(
      ParseCpuTemplateJson(R"({"cpuid_modifiers":[{"leaf":"0x100000000","modifiers":[]}]})").status(),
      "larger than"));
  REQUIRE(ErrorMentions(
      ParseCpuTemplateJson(
          R"({"cpuid_modifiers":[{"leaf":"1","modifiers":[{"register":"rax","bitmap":"0b1"}]}]})")
          .status(),
      "unknown register 'rax'"));
  REQUIRE(ErrorMentions(
      ParseCpuTemplateJson(
          R"({"cpuid_modifiers":[{"leaf":"1","modifiers":[{"register":"eax","bitmap":"0b1"},{"register":"eax","bitmap":"0b0"}]}]})")
          .status(),
      "twice"));
  REQUIRE(ErrorMentions(ParseCpuTemplateJson(R"({"cpu_modifiers":[]})").status(),
                        "unknown field"));
  REQUIRE(ErrorMentions(ParseCpuTemplateJson(R"({"reg_modifiers":[{"addr":"1"}]})").status(),
                        "not supported"));
  REQUIRE(ErrorMentions(
      ParseCpuTemplateJson(R"({"msr_modifiers":[{"addr":"0x10a","bitmap":"0b2"}]})").status(),
      "msr_modifiers[0].bitmap"));
}

TEST_CASE("Applying a template changes only the masked bits") {
  CpuidTable table = {Entry(1, 0, 0, 0x000306a9, 0x00010800, 0xffffffff, 0),
                      Entry(7, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0, 0xffff, 0, 0),
                      Entry(7, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0, 0xabcd, 0, 0)};
  auto t = LoadCpuTemplateFile("libs/vcpu/testdata/firecracker_t2s_like.json");
  REQUIRE(t.ok());
  REQUIRE(ApplyCpuTemplate(table, *t).ok());
  REQUIRE(table[0].ecx == 0xbfffffff);  // bit 30 cleared
  REQUIRE(table[0].edx == 1);           // bit 0 set
  REQUIRE(table[0].eax == 0x000306a9);  // untouched register
  REQUIRE(table[1].ebx == 0xfffe);      // leaf 7.0 bit 0 cleared
  REQUIRE(table[2].ebx == 0xabcd);      // leaf 7.1 untouched
}

TEST_CASE("A template that sets bits of a leaf KVM does not provide is an error") {
  CpuidTable table = {Entry(1, 0, 0, 0, 0, 0, 0)};
  auto t = ParseCpuTemplateJson(
      R"({"cpuid_modifiers":[{"leaf":"0x8000001f","subleaf":"0x0","flags":0,
          "modifiers":[{"register":"eax","bitmap":"0b1"}]}]})");
  REQUIRE(t.ok());
  absl::Status s = ApplyCpuTemplate(table, *t);
  REQUIRE(ErrorMentions(s, "leaf 0x8000001f subleaf 0x0"));
}

TEST_CASE("Clearing bits of a leaf KVM does not provide is a no-op") {
  // A pool's baseline hides leaves some hosts lack (cpu_baseline.h).
  CpuidTable table = {Entry(1, 0, 0, 0, 0x5, 0, 0)};
  auto t = ParseCpuTemplateJson(
      R"({"comment": ["free text"], "cpuid_modifiers":[{"leaf":"0x14","subleaf":"0x0","flags":1,
          "modifiers":[{"register":"eax","bitmap":"0b0000"}]}]})");
  REQUIRE(t.ok());
  REQUIRE(ApplyCpuTemplate(table, *t).ok());
  REQUIRE(table.size() == 1);
  REQUIRE(table[0].ebx == 0x5);
}

TEST_CASE("MSR modifiers apply to known MSRs only") {
  auto t = ParseCpuTemplateJson(
      R"({"msr_modifiers":[{"addr":"0x10a","bitmap":"0b1x"}]})");
  REQUIRE(t.ok());
  std::vector<kvm_msr_entry> msrs;
  REQUIRE(ApplyMsrTemplate(msrs, *t, {0x10a}).ok());
  REQUIRE(msrs.size() == 1);
  REQUIRE(msrs[0].data == 2);
  REQUIRE(ErrorMentions(ApplyMsrTemplate(msrs, *t, {0x10}), "MSR 0x10a"));
}

TEST_CASE("Missing template file is a clear error") {
  auto t = LoadCpuTemplateFile("/nonexistent/template.json");
  REQUIRE(ErrorMentions(t.status(), "/nonexistent/template.json"));
}
