#include "vcpu/cpu_profile.h"

#include <google/protobuf/util/json_util.h>

#include <cstring>
#include <fstream>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"

namespace vcpu {
namespace {

using ::kindling::vcpu::v1::CpuidEntry;

std::string Chars(uint32_t reg) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &reg, 4);
  return s;
}

const CpuidEntry* Find(const CpuProfile& p, uint32_t leaf, uint32_t subleaf) {
  for (const CpuidEntry& e : p.cpuid()) {
    if (e.leaf() == leaf && (!e.subleaf_significant() || e.subleaf() == subleaf)) return &e;
  }
  return nullptr;
}

void DeriveIdentity(CpuProfile& p) {
  if (const CpuidEntry* e = Find(p, 0, 0)) {
    p.set_vendor(Chars(e->ebx()) + Chars(e->edx()) + Chars(e->ecx()));
  }
  if (const CpuidEntry* e = Find(p, 1, 0)) {
    uint32_t a = e->eax();
    uint32_t family = (a >> 8) & 0xf;
    uint32_t model = (a >> 4) & 0xf;
    if (family == 0xf) family += (a >> 20) & 0xff;
    if (family >= 0x6) model |= ((a >> 16) & 0xf) << 4;
    p.set_family(family);
    p.set_model(model);
    p.set_stepping(a & 0xf);
  }
  std::string brand;
  for (uint32_t leaf = 0x80000002; leaf <= 0x80000004; ++leaf) {
    if (const CpuidEntry* e = Find(p, leaf, 0)) {
      brand += Chars(e->eax()) + Chars(e->ebx()) + Chars(e->ecx()) + Chars(e->edx());
    }
  }
  brand.resize(std::strlen(brand.c_str()));
  p.set_model_name(std::string(absl::StripAsciiWhitespace(brand)));
}

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("CPU profile: ", what));
}

absl::Status Validate(const CpuProfile& p) {
  if (p.format_version() == 0) return Bad("formatVersion is missing");
  if (p.format_version() > kCpuProfileFormat) {
    return Bad(absl::StrCat("formatVersion ", p.format_version(),
                            " is newer than this kindling reads (", kCpuProfileFormat, ")"));
  }
  if (p.cpuid_size() > kMaxProfileCpuidEntries) {
    return Bad(absl::StrCat(p.cpuid_size(), " cpuid entries (at most ",
                            kMaxProfileCpuidEntries, ")"));
  }
  if (p.feature_msrs_size() > kMaxProfileMsrs) {
    return Bad(absl::StrCat(p.feature_msrs_size(), " featureMsrs (at most ", kMaxProfileMsrs, ")"));
  }
  std::set<std::pair<uint32_t, uint32_t>> seen;
  for (int i = 0; i < p.cpuid_size(); ++i) {
    const CpuidEntry& e = p.cpuid(i);
    uint32_t sub = e.subleaf_significant() ? e.subleaf() : 0;
    if (!seen.emplace(e.leaf(), sub).second) {
      return Bad(absl::StrFormat("cpuid[%d]: leaf 0x%x subleaf %u appears twice", i, e.leaf(),
                                 sub));
    }
  }
  if (Find(p, 0, 0) == nullptr || Find(p, 1, 0) == nullptr) {
    return Bad("cpuid has no leaf 0 or no leaf 1");
  }
  std::set<uint32_t> msrs;
  for (const auto& m : p.feature_msrs()) {
    if (!msrs.insert(m.index()).second) {
      return Bad(absl::StrFormat("featureMsrs: MSR 0x%x appears twice", m.index()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

CpuProfile ProfileFromCpuid(const CpuidTable& cpuid, const std::string& host) {
  CpuProfile p;
  p.set_format_version(kCpuProfileFormat);
  p.set_host(host);
  for (const kvm_cpuid_entry2& k : cpuid) {
    CpuidEntry* e = p.add_cpuid();
    e->set_leaf(k.function);
    e->set_subleaf(k.index);
    e->set_subleaf_significant(k.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
    e->set_eax(k.eax);
    e->set_ebx(k.ebx);
    e->set_ecx(k.ecx);
    e->set_edx(k.edx);
  }
  DeriveProfileSummary(p);
  return p;
}

void DeriveProfileSummary(CpuProfile& p) {
  DeriveIdentity(p);
  const CpuidEntry* d0 = Find(p, 0xd, 0);
  const CpuidEntry* d1 = Find(p, 0xd, 1);
  p.set_xcr0_supported(d0 ? (uint64_t{d0->edx()} << 32) | d0->eax() : 0);
  p.set_xsave_max_bytes(d0 ? d0->ecx() : 0);
  p.set_xss_supported(d1 ? (uint64_t{d1->edx()} << 32) | d1->ecx() : 0);
  const CpuidEntry* a = Find(p, 0x80000008, 0);
  p.set_phys_address_bits(a ? a->eax() & 0xff : 0);
  p.set_virt_address_bits(a ? (a->eax() >> 8) & 0xff : 0);
}

std::string CpuProfileToJson(const CpuProfile& profile) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(profile, &out, options);
  return out;
}

absl::StatusOr<CpuProfile> ParseCpuProfileJson(std::string_view json) {
  if (json.size() > kMaxProfileBytes) {
    return Bad(absl::StrCat(json.size(), " bytes (at most ", kMaxProfileBytes, ")"));
  }
  CpuProfile p;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto st = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &p, options);
  if (!st.ok()) return Bad(std::string(st.message()));
  RETURN_IF_ERROR(Validate(p));
  DeriveProfileSummary(p);
  return p;
}

absl::StatusOr<CpuProfile> LoadCpuProfileFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read CPU profile ", path));
  std::string text(kMaxProfileBytes + 1, '\0');
  in.read(text.data(), text.size());
  text.resize(in.gcount());
  absl::StatusOr<CpuProfile> p = ParseCpuProfileJson(text);
  if (!p.ok()) {
    return absl::Status(p.status().code(), absl::StrCat(path, ": ", p.status().message()));
  }
  return p;
}

CpuidTable ProfileCpuid(const CpuProfile& profile) {
  CpuidTable out;
  for (const CpuidEntry& e : profile.cpuid()) {
    kvm_cpuid_entry2 k = {};
    k.function = e.leaf();
    k.index = e.subleaf();
    k.flags = e.subleaf_significant() ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
    k.eax = e.eax();
    k.ebx = e.ebx();
    k.ecx = e.ecx();
    k.edx = e.edx();
    out.push_back(k);
  }
  return out;
}

std::optional<uint64_t> ProfileMsr(const CpuProfile& profile, uint32_t index) {
  for (const auto& m : profile.feature_msrs()) {
    if (m.index() == index) return m.value();
  }
  return std::nullopt;
}

}  // namespace vcpu
