#include "vcpu/cpu_compat.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "vcpu/cpu_features.h"

namespace vcpu {
namespace {

constexpr CpuidRegister kRegs[] = {CpuidRegister::kEax, CpuidRegister::kEbx,
                                   CpuidRegister::kEcx, CpuidRegister::kEdx};

// What `table` offers in (leaf, subleaf, r), counting AMD's 0x80000001 EDX
// copies of leaf-1 bits as present where leaf 1 has them.
uint32_t Offered(const CpuidTable& table, uint32_t leaf, uint32_t subleaf, CpuidRegister r) {
  const kvm_cpuid_entry2* e = FindCpuid(table, leaf, subleaf);
  uint32_t v = e ? Register(*e, r) : 0;
  if (leaf == 0x80000001 && r == CpuidRegister::kEdx) {
    if (const kvm_cpuid_entry2* l1 = FindCpuid(table, 1, 0)) v |= l1->edx & kAmdLeaf1EdxMirror;
  }
  return v;
}

uint32_t FieldMask(const RegisterField& f) {
  return static_cast<uint32_t>(((f.width == 32 ? 0x100000000ull : 1ull << f.width) - 1)
                               << f.shift);
}

// Value fields a guest cannot live without more of: address widths, the
// XSAVE area. (Maximum leaves only bound what CPUID answers; not compared.)
bool ComparedField(uint32_t leaf) { return leaf == 0x80000008 || leaf == 0xd; }

void MissingBits(const kvm_cpuid_entry2& g, const CpuidTable& host, CpuidRegister r,
                 const CpuidRegisterRule& rule, std::set<std::string>& out) {
  uint32_t sub = (g.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) ? g.index : 0;
  uint32_t missing = Register(g, r) & ~rule.dynamic & ~Offered(host, g.function, sub, r);
  for (int bit = 0; bit < 32; ++bit) {
    if (missing & (1u << bit)) out.insert(DescribeBit(g.function, sub, r, bit));
  }
}

void MissingFields(const kvm_cpuid_entry2& g, const CpuidTable& host, CpuidRegister r,
                   const CpuidRegisterRule& rule, std::set<std::string>& out) {
  if (!ComparedField(g.function)) return;
  const kvm_cpuid_entry2* h = FindCpuid(host, g.function, g.index);
  for (const RegisterField& f : rule.fields) {
    uint32_t want = (Register(g, r) & FieldMask(f)) >> f.shift;
    uint32_t have = h ? (Register(*h, r) & FieldMask(f)) >> f.shift : 0;
    if (want > have) {
      out.insert(absl::StrFormat("%s %u (leaf 0x%x %s; the host has %u)", f.name, want,
                                 g.function, RegisterName(r), have));
    }
  }
}

// Each XSAVE component the guest's XCR0 allows must be laid out alike on
// the host: KVM's XSAVE buffer is in the host's standard format.
void MissingXsaveLayout(const CpuidTable& guest, const CpuidTable& host,
                        std::set<std::string>& out) {
  const kvm_cpuid_entry2* g0 = FindCpuid(guest, 0xd, 0);
  if (g0 == nullptr) return;
  uint64_t xcr0 = uint64_t{g0->edx} << 32 | g0->eax;
  for (uint32_t n = 2; n < 64; ++n) {
    if (!(xcr0 >> n & 1)) continue;
    const kvm_cpuid_entry2* g = FindCpuid(guest, 0xd, n);
    const kvm_cpuid_entry2* h = FindCpuid(host, 0xd, n);
    if (g == nullptr || h == nullptr) continue;  // a missing component is a missing XCR0 bit
    if (g->eax != h->eax || g->ebx != h->ebx) {
      out.insert(absl::StrFormat("%s laid out as %u bytes at offset %u (the host: %u at %u)",
                                 DescribeXsaveComponent(n), g->eax, g->ebx, h->eax, h->ebx));
    }
  }
}

}  // namespace

std::vector<std::string> MissingCpuFeatures(const CpuidTable& guest, const CpuidTable& host) {
  std::set<std::string> out;
  for (const kvm_cpuid_entry2& g : guest) {
    uint32_t sub = (g.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) ? g.index : 0;
    for (CpuidRegister r : kRegs) {
      CpuidRegisterRule rule = RuleFor(g.function, sub, r);
      if (rule.rule == PoolRule::kAnd) MissingBits(g, host, r, rule, out);
      if (rule.rule == PoolRule::kMin) MissingFields(g, host, r, rule, out);
    }
  }
  MissingXsaveLayout(guest, host, out);
  return {out.begin(), out.end()};
}

std::vector<std::string> MissingMsrFeatures(const std::vector<kvm_msr_entry>& guest,
                                            const std::vector<kvm_msr_entry>& host_features) {
  static constexpr const char* kNames[64] = {
      "rdcl_no", "ibrs_all", nullptr, "skip_l1dfl_vmentry", "ssb_no", "mds_no",
      "pschange_mc_no", "tsx_ctrl", "taa_no", nullptr, nullptr, nullptr, nullptr,
      "sbdr_ssdp_no", "fbsdp_no", "psdp_no", nullptr, "fb_clear", nullptr, nullptr,
      "bhi_no", nullptr, nullptr, nullptr, "pbrsb_no", nullptr, "gds_no", "rfds_no"};
  constexpr uint64_t kNotCompared = 1ull << 2 | 1ull << 19;  // RSBA, RRSBA
  const kvm_msr_entry* g = nullptr;
  const kvm_msr_entry* h = nullptr;
  for (const kvm_msr_entry& e : guest) g = e.index == kArchCapabilitiesMsr ? &e : g;
  for (const kvm_msr_entry& e : host_features) h = e.index == kArchCapabilitiesMsr ? &e : h;
  std::vector<std::string> out;
  if (g == nullptr || h == nullptr) return out;
  uint64_t missing = g->data & ~h->data & ~kNotCompared;
  for (int bit = 0; bit < 64; ++bit) {
    if (!(missing >> bit & 1)) continue;
    out.push_back(kNames[bit] ? absl::StrFormat("%s (MSR 0x10a bit %d)", kNames[bit], bit)
                              : absl::StrFormat("MSR 0x10a bit %d", bit));
  }
  return out;
}

namespace {

absl::Status Refusal(std::vector<std::string> missing, absl::string_view host_name) {
  if (missing.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the guest's CPU has ", missing.size(), " feature(s) host ", host_name,
      " cannot give it; ", absl::StrJoin(missing, ", "), missing.size() == 1 ? " is" : " are",
      " not supported by host ", host_name,
      " (boot guests of a pool with its baseline template: kindling cpu-baseline)"));
}

}  // namespace

absl::Status CheckGuestCpuid(const CpuidTable& guest, const CpuidTable& host,
                             absl::string_view host_name) {
  return Refusal(MissingCpuFeatures(guest, host), host_name);
}

absl::Status CheckGuestCpu(const CpuidTable& guest_cpuid,
                           const std::vector<kvm_msr_entry>& guest_msrs,
                           const CpuidTable& host_cpuid,
                           const std::vector<kvm_msr_entry>& host_feature_msrs,
                           absl::string_view host_name) {
  std::vector<std::string> missing = MissingCpuFeatures(guest_cpuid, host_cpuid);
  for (std::string& m : MissingMsrFeatures(guest_msrs, host_feature_msrs)) {
    missing.push_back(std::move(m));
  }
  return Refusal(std::move(missing), host_name);
}

}  // namespace vcpu
