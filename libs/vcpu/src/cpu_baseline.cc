#include "vcpu/cpu_baseline.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "vcpu/cpu_features.h"

namespace vcpu {
namespace {

using Key = std::pair<uint32_t, uint32_t>;  // leaf, subleaf
constexpr CpuidRegister kRegs[] = {CpuidRegister::kEax, CpuidRegister::kEbx,
                                   CpuidRegister::kEcx, CpuidRegister::kEdx};

// Every host's CPUID, and the facts that decide the rules beyond CPUID.
struct Pool {
  std::vector<CpuidTable> tables;
  std::map<Key, bool> keys;  // (leaf, subleaf) -> subleaf significant
  bool keep_invariant_tsc = false;
  bool keep_tsc_deadline = false;
  uint64_t xsave_components = 0;  // XCR0 | IA32_XSS bits every host has

  // A register's value on host `i`; nullopt when the host lacks the leaf.
  std::optional<uint32_t> Value(size_t i, Key k, CpuidRegister r) const {
    const kvm_cpuid_entry2* e = FindCpuid(tables[i], k.first, k.second);
    if (e == nullptr) return std::nullopt;
    uint32_t v = Register(*e, r);
    if (k.first == 0x80000001 && r == CpuidRegister::kEdx) {
      // AMD's copies of leaf-1 EDX bits count as present where leaf 1 has them.
      if (const kvm_cpuid_entry2* l1 = FindCpuid(tables[i], 1, 0)) {
        v |= l1->edx & kAmdLeaf1EdxMirror;
      }
    }
    return v;
  }
  uint32_t And(Key k, CpuidRegister r) const {
    uint32_t v = ~0u;
    for (size_t i = 0; i < tables.size(); ++i) v &= Value(i, k, r).value_or(0);
    return v;
  }
};

bool AllHave(const Pool& pool, Key k, CpuidRegister r, uint32_t bits) {
  return (pool.And(k, r) & bits) == bits;
}

void DecideTsc(std::span<const CpuProfile> profiles, Pool& pool, std::vector<std::string>& notes) {
  bool all_scale = true, same_khz = true;
  for (const CpuProfile& p : profiles) {
    all_scale = all_scale && p.tsc_scaling();
    same_khz = same_khz && p.tsc_khz() != 0 && p.tsc_khz() == profiles[0].tsc_khz();
  }
  bool invariant = AllHave(pool, {0x80000007, 0}, CpuidRegister::kEdx, kInvariantTscBit);
  pool.keep_invariant_tsc = invariant && (all_scale || same_khz);
  if (invariant && !pool.keep_invariant_tsc) {
    notes.push_back("invariant TSC hidden: the hosts' TSC frequencies differ (or are unknown) "
                    "and not every host can scale a guest's TSC");
  }
  pool.keep_tsc_deadline = pool.keep_invariant_tsc &&
                           AllHave(pool, {1, 0}, CpuidRegister::kEcx, kTscDeadlineBit);
  if (!pool.keep_tsc_deadline) notes.push_back("TSC deadline timer hidden (no invariant TSC)");
}

uint64_t Pair(const Pool& pool, Key k, CpuidRegister high, CpuidRegister low) {
  return uint64_t{pool.And(k, high)} << 32 | pool.And(k, low);
}

bool Identical(const Pool& pool, Key k, CpuidRegister r);

// The XSAVE components every host has, laid out alike (Intel and AMD place
// AVX-512 and PKRU state at different offsets: KVM's XSAVE buffer of one
// cannot be loaded on the other).
void DecideXsave(Pool& pool, std::vector<std::string>& notes) {
  uint64_t have = Pair(pool, {0xd, 0}, CpuidRegister::kEdx, CpuidRegister::kEax) |
                  Pair(pool, {0xd, 1}, CpuidRegister::kEdx, CpuidRegister::kEcx);
  for (uint32_t n = 2; n < 64; ++n) {
    if (!(have >> n & 1)) continue;
    if (!Identical(pool, {0xd, n}, CpuidRegister::kEax) ||
        !Identical(pool, {0xd, n}, CpuidRegister::kEbx)) {
      have &= ~(1ull << n);
      notes.push_back(absl::StrCat(DescribeXsaveComponent(n),
                                   " hidden, with the features that need it: its size or offset "
                                   "differs between the hosts"));
    }
  }
  pool.xsave_components = have | 3;  // x87 and SSE are always there
}

Pool MakePool(std::span<const CpuProfile> profiles, std::vector<std::string>& notes) {
  Pool pool;
  for (const CpuProfile& p : profiles) {
    pool.tables.push_back(ProfileCpuid(p));
    for (const kvm_cpuid_entry2& e : pool.tables.back()) {
      bool significant = e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
      pool.keys[{e.function, significant ? e.index : 0}] |= significant;
    }
  }
  DecideTsc(profiles, pool, notes);
  DecideXsave(pool, notes);
  return pool;
}

// The bits of a kAnd register that pass: every host's, less those never
// shown and those the TSC decision removed.
uint32_t PassingBits(const Pool& pool, Key k, const CpuidRegisterRule& rule) {
  uint32_t v = pool.And(k, rule.reg) & ~rule.hidden;
  v &= ~FeaturesNeedingXsave(~pool.xsave_components, k.first, k.second, rule.reg);
  if (k.first == 0xd && k.second <= 1) {
    bool high = rule.reg == CpuidRegister::kEdx;
    bool xcr0 = k.second == 0 && (rule.reg == CpuidRegister::kEax || high);
    bool xss = k.second == 1 && (rule.reg == CpuidRegister::kEcx || high);
    if (xcr0 || xss) v &= static_cast<uint32_t>(pool.xsave_components >> (high ? 32 : 0));
  }
  if (k.first == 0x80000007 && rule.reg == CpuidRegister::kEdx && !pool.keep_invariant_tsc) {
    v &= ~kInvariantTscBit;
  }
  if (k.first == 1 && rule.reg == CpuidRegister::kEcx && !pool.keep_tsc_deadline) {
    v &= ~kTscDeadlineBit;
  }
  return v;
}

bool Identical(const Pool& pool, Key k, CpuidRegister r) {
  std::optional<uint32_t> first = pool.Value(0, k, r);
  for (size_t i = 0; i < pool.tables.size(); ++i) {
    std::optional<uint32_t> v = pool.Value(i, k, r);
    if (!v || v != first) return false;
  }
  return true;
}

BitmapModifier MinFields(const Pool& pool, Key k, const CpuidRegisterRule& rule) {
  static constexpr RegisterField kWhole[] = {{0, 32, "value"}};
  std::span<const RegisterField> fields = rule.fields.empty() ? kWhole : rule.fields;
  BitmapModifier m;
  for (const RegisterField& f : fields) {
    uint64_t mask = ((f.width == 32 ? 0x100000000ull : 1ull << f.width) - 1) << f.shift;
    std::optional<uint64_t> lowest;
    for (size_t i = 0; i < pool.tables.size(); ++i) {
      if (auto v = pool.Value(i, k, rule.reg)) {
        uint64_t field = (uint64_t{*v} & mask) >> f.shift;
        lowest = lowest ? std::min(*lowest, field) : field;
      }
    }
    if (!lowest) continue;
    m.mask |= mask;
    m.bits |= *lowest << f.shift;
  }
  return m;
}

constexpr BitmapModifier kZero = {0xffffffffu, 0};

std::optional<BitmapModifier> ModifierFor(const Pool& pool, Key k, CpuidRegister r) {
  CpuidRegisterRule rule = RuleFor(k.first, k.second, r);
  switch (rule.rule) {
    case PoolRule::kKeep:
      return std::nullopt;
    case PoolRule::kAnd:
      return BitmapModifier{~PassingBits(pool, k, rule) & ~rule.dynamic & 0xffffffffu, 0};
    case PoolRule::kMin:  // a value a host lacks cannot be lowered there: hidden
      for (size_t i = 0; i < pool.tables.size(); ++i) {
        if (!pool.Value(i, k, r)) return kZero;
      }
      return MinFields(pool, k, rule);
    case PoolRule::kSame:
      if (Identical(pool, k, r)) return std::nullopt;
      return kZero;
    case PoolRule::kHide:
      return kZero;
    case PoolRule::kXsave:
      if (k.second >= 2 && k.second < 64 && (pool.xsave_components >> k.second & 1) &&
          Identical(pool, k, r)) {
        return std::nullopt;
      }
      return kZero;
  }
  return std::nullopt;
}

void AddArchCapabilities(std::span<const CpuProfile> profiles, CpuTemplate& t,
                         std::vector<std::string>& notes) {
  uint64_t common = ~0ull;
  for (const CpuProfile& p : profiles) {
    std::optional<uint64_t> v = ProfileMsr(p, kArchCapabilitiesMsr);
    if (!v) {
      notes.push_back(absl::StrCat("IA32_ARCH_CAPABILITIES left alone: host '", p.host(),
                                   "' does not report it"));
      return;
    }
    common &= *v;
  }
  t.msr_modifiers.push_back({kArchCapabilitiesMsr, {~0ull, common}});
}

void AddVendorNote(std::span<const CpuProfile> profiles, std::vector<std::string>& notes) {
  std::set<std::string> vendors;
  for (const CpuProfile& p : profiles) vendors.insert(p.vendor());
  notes.push_back(absl::StrCat(
      "vendor ", absl::StrJoin(vendors, ", "),
      ": the template leaves leaf 0's vendor string and leaf 1's family/model/stepping alone, "
      "so a guest keeps those of the host it booted on, across migrations"));
}

}  // namespace

absl::StatusOr<Baseline> ComputeBaseline(std::span<const CpuProfile> profiles) {
  if (profiles.empty()) return absl::InvalidArgumentError("a baseline needs at least one CPU profile");
  if (profiles.size() > kMaxPoolProfiles) {
    return absl::InvalidArgumentError(absl::StrCat(profiles.size(), " CPU profiles (at most ",
                                                   kMaxPoolProfiles, ")"));
  }
  Baseline b;
  AddVendorNote(profiles, b.notes);
  Pool pool = MakePool(profiles, b.notes);
  for (const auto& [key, significant] : pool.keys) {
    CpuidModifier m{key.first, key.second, significant ? 1u : 0u, {}};
    for (CpuidRegister r : kRegs) {
      std::optional<BitmapModifier> bits = ModifierFor(pool, key, r);
      if (bits && bits->mask != 0) m.modifiers.push_back({r, *bits});
    }
    if (!m.modifiers.empty()) b.cpu_template.cpuid_modifiers.push_back(std::move(m));
  }
  AddArchCapabilities(profiles, b.cpu_template, b.notes);
  return b;
}

namespace {

std::string Bitmap(const BitmapModifier& m, int width) {
  std::string s = "0b";
  for (int bit = width - 1; bit >= 0; --bit) {
    uint64_t one = 1ull << bit;
    s += !(m.mask & one) ? 'x' : (m.bits & one) ? '1' : '0';
  }
  return s;
}

std::string Quote(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string List(const std::vector<std::string>& items) {
  if (items.empty()) return "[]";
  return absl::StrCat("[\n", absl::StrJoin(items, ",\n"), "\n  ]");
}

}  // namespace

std::string CpuTemplateToJson(const CpuTemplate& t, const std::vector<std::string>& notes) {
  std::vector<std::string> comment, cpuid, msrs;
  for (const std::string& n : notes) comment.push_back("    " + Quote(n));
  for (const CpuidModifier& m : t.cpuid_modifiers) {
    std::vector<std::string> regs;
    for (const CpuidRegisterModifier& r : m.modifiers) {
      regs.push_back(absl::StrFormat("        {\"register\": \"%s\", \"bitmap\": \"%s\"}",
                                     RegisterName(r.reg), Bitmap(r.bitmap, 32)));
    }
    cpuid.push_back(absl::StrFormat(
        "    {\"leaf\": \"0x%x\", \"subleaf\": \"0x%x\", \"flags\": %u, \"modifiers\": [\n%s\n    ]}",
        m.leaf, m.subleaf, m.flags, absl::StrJoin(regs, ",\n")));
  }
  for (const MsrModifier& m : t.msr_modifiers) {
    msrs.push_back(absl::StrFormat("    {\"addr\": \"0x%x\", \"bitmap\": \"%s\"}", m.addr,
                                   Bitmap(m.bitmap, 64)));
  }
  return absl::StrCat("{\n  \"comment\": ", List(comment), ",\n  \"cpuid_modifiers\": ",
                      List(cpuid), ",\n  \"msr_modifiers\": ", List(msrs), "\n}\n");
}

}  // namespace vcpu
