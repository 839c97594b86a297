#include "vcpu/cpu_template.h"

// property_tree pulls in boost/bind.hpp, which warns about global placeholders.
#define BOOST_BIND_GLOBAL_PLACEHOLDERS
#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>
#include <algorithm>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vcpu {
namespace {

using boost::property_tree::ptree;

constexpr size_t kMaxTemplateBytes = 1 << 20;
constexpr size_t kMaxModifiers = 4096;

absl::Status FieldError(const std::string& path, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("CPU template: ", path, ": ", why));
}

// A number written as "0x1f", "31" or a bare JSON number.
absl::StatusOr<uint64_t> ParseNumber(const std::string& text,
                                     const std::string& path, uint64_t max) {
  absl::string_view s = absl::StripAsciiWhitespace(text);
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
    base = 16;
  }
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    return FieldError(path, absl::StrCat("'", text, "' is not a number"));
  }
  if (v > max) {
    return FieldError(path, absl::StrFormat("%s is larger than 0x%x", text, max));
  }
  return v;
}

absl::StatusOr<const ptree*> Child(const ptree& node, const std::string& key,
                                   const std::string& path) {
  auto it = node.find(key);
  if (it == node.not_found()) {
    return FieldError(path, absl::StrCat("missing field '", key, "'"));
  }
  return &it->second;
}

absl::StatusOr<CpuidRegister> ParseRegister(const std::string& name,
                                            const std::string& path) {
  std::string n = absl::AsciiStrToLower(name);
  if (n == "eax") return CpuidRegister::kEax;
  if (n == "ebx") return CpuidRegister::kEbx;
  if (n == "ecx") return CpuidRegister::kEcx;
  if (n == "edx") return CpuidRegister::kEdx;
  return FieldError(path, absl::StrCat("unknown register '", name,
                                       "' (expected eax, ebx, ecx or edx)"));
}

absl::StatusOr<CpuidModifier> ParseCpuidModifier(const ptree& node,
                                                 const std::string& path) {
  CpuidModifier m;
  auto leaf = Child(node, "leaf", path);
  if (!leaf.ok()) return leaf.status();
  auto leaf_v = ParseNumber((*leaf)->data(), path + ".leaf", 0xffffffff);
  if (!leaf_v.ok()) return leaf_v.status();
  m.leaf = *leaf_v;
  if (auto it = node.find("subleaf"); it != node.not_found()) {
    auto v = ParseNumber(it->second.data(), path + ".subleaf", 0xffffffff);
    if (!v.ok()) return v.status();
    m.subleaf = *v;
  }
  if (auto it = node.find("flags"); it != node.not_found()) {
    auto v = ParseNumber(it->second.data(), path + ".flags", 7);
    if (!v.ok()) return v.status();
    m.flags = *v;
  }
  auto mods = Child(node, "modifiers", path);
  if (!mods.ok()) return mods.status();
  std::set<CpuidRegister> seen;
  int i = 0;
  for (const auto& [key, mod] : **mods) {
    std::string p = absl::StrCat(path, ".modifiers[", i++, "]");
    auto reg = Child(mod, "register", p);
    if (!reg.ok()) return reg.status();
    auto r = ParseRegister((*reg)->data(), p + ".register");
    if (!r.ok()) return r.status();
    if (!seen.insert(*r).second) {
      return FieldError(p, "register modified twice in one leaf");
    }
    auto bm = Child(mod, "bitmap", p);
    if (!bm.ok()) return bm.status();
    auto bitmap = ParseBitmap((*bm)->data(), 32);
    if (!bitmap.ok()) return FieldError(p + ".bitmap", bitmap.status().message());
    m.modifiers.push_back({*r, *bitmap});
  }
  return m;
}

absl::StatusOr<MsrModifier> ParseMsrModifier(const ptree& node,
                                             const std::string& path) {
  MsrModifier m;
  auto addr = Child(node, "addr", path);
  if (!addr.ok()) return addr.status();
  auto v = ParseNumber((*addr)->data(), path + ".addr", 0xffffffff);
  if (!v.ok()) return v.status();
  m.addr = *v;
  auto bm = Child(node, "bitmap", path);
  if (!bm.ok()) return bm.status();
  auto bitmap = ParseBitmap((*bm)->data(), 64);
  if (!bitmap.ok()) return FieldError(path + ".bitmap", bitmap.status().message());
  m.bitmap = *bitmap;
  return m;
}

}  // namespace

uint32_t& Register(kvm_cpuid_entry2& e, CpuidRegister r) {
  switch (r) {
    case CpuidRegister::kEax: return e.eax;
    case CpuidRegister::kEbx: return e.ebx;
    case CpuidRegister::kEcx: return e.ecx;
    case CpuidRegister::kEdx: break;
  }
  return e.edx;
}

uint32_t Register(const kvm_cpuid_entry2& e, CpuidRegister r) {
  return Register(const_cast<kvm_cpuid_entry2&>(e), r);
}

absl::StatusOr<BitmapModifier> ParseBitmap(std::string_view view, int width) {
  const std::string text(view);
  if (text.size() < 2 || text.substr(0, 2) != "0b") {
    return absl::InvalidArgumentError(
        absl::StrCat("bitmap '", text, "' must start with 0b"));
  }
  BitmapModifier m;
  int bit = 0;
  for (auto it = text.rbegin(); it != text.rend() - 2; ++it) {
    char c = *it;
    if (c == '_') continue;
    if (bit >= width) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bitmap '", text, "' has more than ", width, " bits"));
    }
    uint64_t b = uint64_t{1} << bit;
    if (c == '0' || c == '1') {
      m.mask |= b;
      if (c == '1') m.bits |= b;
    } else if (c != 'x' && c != 'X') {
      return absl::InvalidArgumentError(absl::StrCat(
          "bitmap '", text, "' has '", std::string(1, c),
          "'; only 0, 1, x and _ are allowed"));
    }
    ++bit;
  }
  if (bit == 0) {
    return absl::InvalidArgumentError(absl::StrCat("bitmap '", text,
                                                   "' has no bits"));
  }
  return m;
}

absl::StatusOr<CpuTemplate> ParseCpuTemplateJson(std::string_view json) {
  if (json.size() > kMaxTemplateBytes) {
    return absl::InvalidArgumentError("CPU template is larger than 1 MiB");
  }
  ptree root;
  try {
    std::istringstream in{std::string(json)};
    boost::property_tree::read_json(in, root);
  } catch (const boost::property_tree::json_parser_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CPU template is not valid JSON: line ", e.line(), ": ", e.message()));
  }
  CpuTemplate t;
  for (const auto& [key, value] : root) {
    if (key == "cpuid_modifiers") {
      int i = 0;
      for (const auto& [k, node] : value) {
        auto m = ParseCpuidModifier(node, absl::StrCat("cpuid_modifiers[", i++, "]"));
        if (!m.ok()) return m.status();
        t.cpuid_modifiers.push_back(std::move(*m));
      }
    } else if (key == "msr_modifiers") {
      int i = 0;
      for (const auto& [k, node] : value) {
        auto m = ParseMsrModifier(node, absl::StrCat("msr_modifiers[", i++, "]"));
        if (!m.ok()) return m.status();
        t.msr_modifiers.push_back(*m);
      }
    } else if (key == "comment") {
      // Free text for people (kindling cpu-baseline writes its notes here).
    } else if (key == "kvm_capabilities" || key == "reg_modifiers" ||
               key == "vcpu_features") {
      if (!value.empty()) {
        return FieldError(key, "is not supported by kindling on x86-64");
      }
    } else {
      return FieldError(key, "unknown field");
    }
  }
  if (t.cpuid_modifiers.size() + t.msr_modifiers.size() > kMaxModifiers) {
    return absl::InvalidArgumentError("CPU template has too many modifiers");
  }
  return t;
}

absl::StatusOr<CpuTemplate> LoadCpuTemplateFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read CPU template ", path));
  std::string text(kMaxTemplateBytes + 1, '\0');
  in.read(text.data(), text.size());
  text.resize(in.gcount());
  auto t = ParseCpuTemplateJson(text);
  if (!t.ok()) {
    return absl::Status(t.status().code(),
                        absl::StrCat(path, ": ", t.status().message()));
  }
  return t;
}

namespace {

bool OnlyClears(const CpuidModifier& m) {
  for (const CpuidRegisterModifier& r : m.modifiers) {
    if (r.bitmap.bits & r.bitmap.mask) return false;
  }
  return true;
}

}  // namespace

absl::Status ApplyCpuTemplate(CpuidTable& table, const CpuTemplate& tmpl) {
  for (const CpuidModifier& m : tmpl.cpuid_modifiers) {
    kvm_cpuid_entry2* e = FindCpuid(table, m.leaf, m.subleaf);
    if (e == nullptr && OnlyClears(m)) continue;  // nothing there to clear
    if (e == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "CPU template modifies CPUID leaf 0x%x subleaf 0x%x, which KVM "
          "does not provide on this host",
          m.leaf, m.subleaf));
    }
    for (const CpuidRegisterModifier& r : m.modifiers) {
      uint32_t& reg = Register(*e, r.reg);
      reg = static_cast<uint32_t>(r.bitmap.Apply(reg));
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyMsrTemplate(std::vector<kvm_msr_entry>& msrs,
                              const CpuTemplate& tmpl,
                              const std::vector<uint32_t>& kvm_msr_list) {
  for (const MsrModifier& m : tmpl.msr_modifiers) {
    if (std::find(kvm_msr_list.begin(), kvm_msr_list.end(), m.addr) ==
        kvm_msr_list.end()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "CPU template modifies MSR 0x%x, which KVM does not support", m.addr));
    }
    auto it = std::find_if(msrs.begin(), msrs.end(),
                           [&](const kvm_msr_entry& e) { return e.index == m.addr; });
    if (it == msrs.end()) {
      kvm_msr_entry e = {};
      e.index = m.addr;
      msrs.push_back(e);
      it = msrs.end() - 1;
    }
    it->data = m.bitmap.Apply(it->data);
  }
  return absl::OkStatus();
}

}  // namespace vcpu
