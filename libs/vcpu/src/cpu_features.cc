#include "vcpu/cpu_features.h"

#include <array>

#include "absl/strings/str_format.h"

namespace vcpu {
namespace {

using R = CpuidRegister;
using Names = std::array<const char*, 32>;

constexpr uint32_t B(int n) { return 1u << n; }

// Leaf 1 EDX; AMD's 0x80000001 EDX mirror uses these names too.
constexpr Names kLeaf1Edx = {
    "fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", nullptr, "sep",
    "mtrr", "pge", "mca", "cmov", "pat", "pse36", "pn", "clflush", nullptr, "dts", "acpi",
    "mmx", "fxsr", "sse", "sse2", "ss", "ht", "tm", "ia64", "pbe"};
constexpr Names kLeaf1Ecx = {
    "pni", "pclmulqdq", "dtes64", "monitor", "ds_cpl", "vmx", "smx", "est", "tm2", "ssse3",
    "cid", "sdbg", "fma", "cx16", "xtpr", "pdcm", nullptr, "pcid", "dca", "sse4_1", "sse4_2",
    "x2apic", "movbe", "popcnt", "tsc_deadline_timer", "aes", "xsave", "osxsave", "avx",
    "f16c", "rdrand", "hypervisor"};
constexpr Names kLeaf6Eax = {"dtherm", "ida", "arat", nullptr, "pln", nullptr, "pts", "hwp"};
constexpr Names kLeaf7Ebx = {
    "fsgsbase", "tsc_adjust", "sgx", "bmi1", "hle", "avx2", "fdp_excptn_only", "smep", "bmi2",
    "erms", "invpcid", "rtm", "cqm", "zero_fcs_fds", "mpx", "rdt_a", "avx512f", "avx512dq",
    "rdseed", "adx", "smap", "avx512ifma", "pcommit", "clflushopt", "clwb", "intel_pt",
    "avx512pf", "avx512er", "avx512cd", "sha_ni", "avx512bw", "avx512vl"};
constexpr Names kLeaf7Ecx = {
    "prefetchwt1", "avx512vbmi", "umip", "pku", "ospke", "waitpkg", "avx512_vbmi2", "shstk",
    "gfni", "vaes", "vpclmulqdq", "avx512_vnni", "avx512_bitalg", "tme", "avx512_vpopcntdq",
    nullptr, "la57", nullptr, nullptr, nullptr, nullptr, nullptr, "rdpid", "kl",
    "bus_lock_detect", "cldemote", nullptr, "movdiri", "movdir64b", "enqcmd", "sgx_lc", "pks"};
constexpr Names kLeaf7Edx = {
    nullptr, "sgx_keys", "avx512_4vnniw", "avx512_4fmaps", "fsrm", "uintr", nullptr, nullptr,
    "avx512_vp2intersect", "srbds_ctrl", "md_clear", "rtm_always_abort", nullptr,
    "tsx_force_abort", "serialize", "hybrid_cpu", "tsxldtrk", nullptr, "pconfig", "arch_lbr",
    "ibt", nullptr, "amx_bf16", "avx512_fp16", "amx_tile", "amx_int8", "spec_ctrl",
    "intel_stibp", "flush_l1d", "arch_capabilities", "core_capabilities", "spec_ctrl_ssbd"};
constexpr Names kLeaf71Eax = {
    "sha512", "sm3", "sm4", nullptr, "avx_vnni", "avx512_bf16", "lass", "cmpccxadd",
    "arch_perfmon_ext", nullptr, "fzrm", "fsrs", "fsrc", nullptr, nullptr, nullptr, nullptr,
    "fred", "lkgs", "wrmsrns", nullptr, "amx_fp16", "hreset", "avx_ifma", nullptr, nullptr,
    "lam", "msrlist"};
constexpr Names kXcr0 = {
    "xsave_x87", "xsave_sse", "xsave_avx", "xsave_bndregs", "xsave_bndcsr", "xsave_opmask",
    "xsave_zmm_hi256", "xsave_hi16_zmm", nullptr, "xsave_pkru", nullptr, nullptr, nullptr,
    nullptr, nullptr, nullptr, nullptr, "xsave_xtilecfg", "xsave_xtiledata"};
constexpr Names kLeafD1Eax = {"xsaveopt", "xsavec", "xgetbv1", "xsaves", "xfd"};
constexpr Names kKvmFeatures = {
    "kvmclock", "nop_io_delay", "mmu_op", "kvmclock2", "async_pf", "steal_time", "pv_eoi",
    "pv_unhalt", nullptr, "pv_tlb_flush", "async_pf_vmexit", "pv_send_ipi", "poll_control",
    "pv_sched_yield", "async_pf_int", "msi_ext_dest_id", "hc_map_gpa_range",
    "migration_control", nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
    "kvmclock_stable"};
constexpr Names kExt1Ecx = {
    "lahf_lm", "cmp_legacy", "svm", "extapic", "cr8_legacy", "lzcnt/abm", "sse4a",
    "misalignsse", "3dnowprefetch", "osvw", "ibs", "xop", "skinit", "wdt", nullptr, "lwp",
    "fma4", "tce", nullptr, "nodeid_msr", nullptr, "tbm", "topoext", "perfctr_core",
    "perfctr_nb", nullptr, "bpext", "ptsc", "perfctr_llc", "mwaitx"};
constexpr Names kExt1Edx = {
    "fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", nullptr, "syscall",
    "mtrr", "pge", "mca", "cmov", "pat", "pse36", nullptr, "mp", "nx", nullptr, "mmxext",
    "mmx", "fxsr", "fxsr_opt", "pdpe1gb", "rdtscp", nullptr, "lm", "3dnowext", "3dnow"};
constexpr Names kExt7Edx = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                            nullptr, "invtsc"};
constexpr Names kExt8Ebx = {
    "clzero", "irperf", "xsaveerptr", nullptr, "rdpru", nullptr, nullptr, nullptr, nullptr,
    "wbnoinvd", nullptr, nullptr, "amd_ibpb", nullptr, "amd_ibrs", "amd_stibp", nullptr,
    "amd_stibp_always_on", nullptr, nullptr, nullptr, nullptr, nullptr, "amd_ppin",
    "amd_ssbd", "virt_ssbd", "amd_ssb_no", "cppc", "amd_psfd"};
constexpr Names kExt21Eax = {"no_nested_data_bp", nullptr, "lfence_rdtsc", nullptr, nullptr,
                             nullptr, "null_sel_clr_base", nullptr, "autoibrs",
                             "no_smm_ctl_msr"};

struct NamedRegister {
  uint32_t leaf;
  uint32_t subleaf;
  R reg;
  const Names* names;
};

constexpr NamedRegister kNamed[] = {
    {1, 0, R::kEdx, &kLeaf1Edx},          {1, 0, R::kEcx, &kLeaf1Ecx},
    {6, 0, R::kEax, &kLeaf6Eax},          {7, 0, R::kEbx, &kLeaf7Ebx},
    {7, 0, R::kEcx, &kLeaf7Ecx},          {7, 0, R::kEdx, &kLeaf7Edx},
    {7, 1, R::kEax, &kLeaf71Eax},         {0xd, 0, R::kEax, &kXcr0},
    {0xd, 1, R::kEax, &kLeafD1Eax},       {0x40000001, 0, R::kEax, &kKvmFeatures},
    {0x80000001, 0, R::kEcx, &kExt1Ecx},  {0x80000001, 0, R::kEdx, &kExt1Edx},
    {0x80000007, 0, R::kEdx, &kExt7Edx},  {0x80000008, 0, R::kEbx, &kExt8Ebx},
    {0x80000021, 0, R::kEax, &kExt21Eax},
};

constexpr RegisterField kMaxLeaf[] = {{0, 32, "maximum leaf"}};
constexpr RegisterField kMaxSubleaf[] = {{0, 32, "maximum subleaf of leaf 7"}};
constexpr RegisterField kXsaveMax[] = {{0, 32, "largest XSAVE area (bytes)"}};
constexpr RegisterField kAddressBits[] = {{0, 8, "physical address bits"},
                                          {8, 8, "linear address bits"},
                                          {16, 8, "guest physical address bits"}};

using P = PoolRule;
constexpr std::optional<uint32_t> kAny = std::nullopt;

// Order matters: the first rule for (leaf, subleaf, reg) wins.
const CpuidRegisterRule kRules[] = {
    {0, kAny, R::kEax, P::kMin, 0, 0, kMaxLeaf},
    {0, kAny, R::kEbx, P::kKeep},  // vendor string: the booting host's
    {0, kAny, R::kEcx, P::kKeep},
    {0, kAny, R::kEdx, P::kKeep},
    {1, kAny, R::kEax, P::kKeep},  // family/model/stepping: the booting host's
    {1, kAny, R::kEbx, P::kKeep},  // APIC ID, CLFLUSH size, count: per vCPU
    // DTES64, MONITOR, DS-CPL, VMX, SMX, EST, TM2, xTPR, PDCM, DCA: host
    // power management, debug store, nesting and PMU.
    {1, kAny, R::kEcx, P::kAnd,
     B(2) | B(3) | B(4) | B(5) | B(6) | B(7) | B(8) | B(14) | B(15) | B(18),
     B(27) | B(31)},  // OSXSAVE (the OS), hypervisor (the VMM)
    {1, kAny, R::kEdx, P::kAnd, B(18) | B(21) | B(22) | B(29) | B(31),  // PN DS ACPI TM PBE
     B(28)},                                                        // HTT: per VM
    {0x2, kAny, R::kEax, P::kKeep}, {0x2, kAny, R::kEbx, P::kKeep},
    {0x2, kAny, R::kEcx, P::kKeep}, {0x2, kAny, R::kEdx, P::kKeep},
    {0x4, kAny, R::kEax, P::kKeep}, {0x4, kAny, R::kEbx, P::kKeep},
    {0x4, kAny, R::kEcx, P::kKeep}, {0x4, kAny, R::kEdx, P::kKeep},
    {0x5, kAny, R::kEax, P::kHide}, {0x5, kAny, R::kEbx, P::kHide},  // MONITOR/MWAIT
    {0x5, kAny, R::kEcx, P::kHide}, {0x5, kAny, R::kEdx, P::kHide},
    {0x6, kAny, R::kEax, P::kAnd, ~B(2)},  // only ARAT
    {0x6, kAny, R::kEbx, P::kHide}, {0x6, kAny, R::kEcx, P::kHide},
    {0x6, kAny, R::kEdx, P::kHide},
    {0x7, 0, R::kEax, P::kMin, 0, 0, kMaxSubleaf},
    {0x7, 0, R::kEbx, P::kAnd, B(2) | B(12) | B(15) | B(22) | B(25)},  // SGX RDT PCOMMIT PT
    {0x7, 0, R::kEcx, P::kAnd, B(13) | B(23) | B(30), B(4)},  // TME KL SGX_LC; OSPKE
    {0x7, 0, R::kEdx, P::kAnd, B(1) | B(15) | B(18) | B(19)},  // SGX_KEYS HYBRID PCONFIG ARCH_LBR
    {0x7, 1, R::kEax, P::kAnd, B(8)},  // ARCH_PERFMON_EXT
    {0x7, kAny, R::kEax, P::kAnd}, {0x7, kAny, R::kEbx, P::kAnd},
    {0x7, kAny, R::kEcx, P::kAnd}, {0x7, kAny, R::kEdx, P::kAnd},
    {0x9, kAny, R::kEax, P::kHide},  // DCA
    {0xa, kAny, R::kEax, P::kHide}, {0xa, kAny, R::kEbx, P::kHide},  // PMU
    {0xa, kAny, R::kEcx, P::kHide}, {0xa, kAny, R::kEdx, P::kHide},
    {0xb, kAny, R::kEax, P::kKeep}, {0xb, kAny, R::kEbx, P::kKeep},  // topology
    {0xb, kAny, R::kEcx, P::kKeep}, {0xb, kAny, R::kEdx, P::kKeep},
    {0xd, 0, R::kEax, P::kAnd}, {0xd, 0, R::kEdx, P::kAnd},  // XCR0
    {0xd, 0, R::kEbx, P::kKeep},  // size for the XCR0 the OS set
    {0xd, 0, R::kEcx, P::kMin, 0, 0, kXsaveMax},
    {0xd, 1, R::kEax, P::kAnd}, {0xd, 1, R::kEbx, P::kKeep},
    {0xd, 1, R::kEcx, P::kAnd}, {0xd, 1, R::kEdx, P::kAnd},  // IA32_XSS
    {0xd, kAny, R::kEax, P::kXsave}, {0xd, kAny, R::kEbx, P::kXsave},
    {0xd, kAny, R::kEcx, P::kXsave}, {0xd, kAny, R::kEdx, P::kXsave},
    {0xf, kAny, R::kEax, P::kHide}, {0xf, kAny, R::kEbx, P::kHide},  // RDT monitoring
    {0xf, kAny, R::kEcx, P::kHide}, {0xf, kAny, R::kEdx, P::kHide},
    {0x10, kAny, R::kEax, P::kHide}, {0x10, kAny, R::kEbx, P::kHide},  // RDT allocation
    {0x10, kAny, R::kEcx, P::kHide}, {0x10, kAny, R::kEdx, P::kHide},
    {0x12, kAny, R::kEax, P::kHide}, {0x12, kAny, R::kEbx, P::kHide},  // SGX
    {0x12, kAny, R::kEcx, P::kHide}, {0x12, kAny, R::kEdx, P::kHide},
    {0x14, kAny, R::kEax, P::kHide}, {0x14, kAny, R::kEbx, P::kHide},  // Processor Trace
    {0x14, kAny, R::kEcx, P::kHide}, {0x14, kAny, R::kEdx, P::kHide},
    {0x19, kAny, R::kEax, P::kHide}, {0x19, kAny, R::kEbx, P::kHide},  // Key Locker
    {0x19, kAny, R::kEcx, P::kHide}, {0x19, kAny, R::kEdx, P::kHide},
    {0x1b, kAny, R::kEax, P::kHide}, {0x1b, kAny, R::kEbx, P::kHide},  // PCONFIG
    {0x1b, kAny, R::kEcx, P::kHide}, {0x1b, kAny, R::kEdx, P::kHide},
    {0x1c, kAny, R::kEax, P::kHide}, {0x1c, kAny, R::kEbx, P::kHide},  // arch LBR
    {0x1c, kAny, R::kEcx, P::kHide}, {0x1c, kAny, R::kEdx, P::kHide},
    {0x1f, kAny, R::kEax, P::kKeep}, {0x1f, kAny, R::kEbx, P::kKeep},  // topology
    {0x1f, kAny, R::kEcx, P::kKeep}, {0x1f, kAny, R::kEdx, P::kKeep},
    {0x40000000, kAny, R::kEax, P::kKeep}, {0x40000000, kAny, R::kEbx, P::kKeep},
    {0x40000000, kAny, R::kEcx, P::kKeep}, {0x40000000, kAny, R::kEdx, P::kKeep},
    {0x40000001, kAny, R::kEax, P::kAnd}, {0x40000001, kAny, R::kEdx, P::kAnd},
    {0x80000000, kAny, R::kEax, P::kMin, 0, 0, kMaxLeaf},
    {0x80000000, kAny, R::kEbx, P::kKeep}, {0x80000000, kAny, R::kEcx, P::kKeep},
    {0x80000000, kAny, R::kEdx, P::kKeep},
    {0x80000001, kAny, R::kEax, P::kKeep}, {0x80000001, kAny, R::kEbx, P::kKeep},
    // SVM EXTAPIC OSVW IBS SKINIT WDT LWP NODEID PERFCTR_CORE/NB BPEXT PTSC PERFCTR_LLC
    {0x80000001, kAny, R::kEcx, P::kAnd,
     B(2) | B(3) | B(9) | B(10) | B(12) | B(13) | B(15) | B(19) | B(23) | B(24) | B(26) |
         B(27) | B(28)},
    {0x80000001, kAny, R::kEdx, P::kAnd},  // bits in kAmdLeaf1EdxMirror: leaf 1's twins
    {0x80000002, kAny, R::kEax, P::kKeep}, {0x80000002, kAny, R::kEbx, P::kKeep},  // brand
    {0x80000002, kAny, R::kEcx, P::kKeep}, {0x80000002, kAny, R::kEdx, P::kKeep},
    {0x80000003, kAny, R::kEax, P::kKeep}, {0x80000003, kAny, R::kEbx, P::kKeep},
    {0x80000003, kAny, R::kEcx, P::kKeep}, {0x80000003, kAny, R::kEdx, P::kKeep},
    {0x80000004, kAny, R::kEax, P::kKeep}, {0x80000004, kAny, R::kEbx, P::kKeep},
    {0x80000004, kAny, R::kEcx, P::kKeep}, {0x80000004, kAny, R::kEdx, P::kKeep},
    {0x80000005, kAny, R::kEax, P::kKeep}, {0x80000005, kAny, R::kEbx, P::kKeep},  // caches
    {0x80000005, kAny, R::kEcx, P::kKeep}, {0x80000005, kAny, R::kEdx, P::kKeep},
    {0x80000006, kAny, R::kEax, P::kKeep}, {0x80000006, kAny, R::kEbx, P::kKeep},
    {0x80000006, kAny, R::kEcx, P::kKeep}, {0x80000006, kAny, R::kEdx, P::kKeep},
    {0x80000007, kAny, R::kEdx, P::kAnd, ~B(8)},  // only invariant TSC
    {0x80000007, kAny, R::kEax, P::kHide}, {0x80000007, kAny, R::kEbx, P::kHide},
    {0x80000007, kAny, R::kEcx, P::kHide},
    {0x80000008, kAny, R::kEax, P::kMin, 0, 0, kAddressBits},
    {0x80000008, kAny, R::kEbx, P::kAnd, B(1) | B(23) | B(27)},  // IRPERF PPIN CPPC
    {0x80000008, kAny, R::kEcx, P::kKeep},                       // core count
    {0x8000000a, kAny, R::kEax, P::kHide}, {0x8000000a, kAny, R::kEbx, P::kHide},  // SVM
    {0x8000000a, kAny, R::kEcx, P::kHide}, {0x8000000a, kAny, R::kEdx, P::kHide},
    {0x8000001d, kAny, R::kEax, P::kKeep}, {0x8000001d, kAny, R::kEbx, P::kKeep},
    {0x8000001d, kAny, R::kEcx, P::kKeep}, {0x8000001d, kAny, R::kEdx, P::kKeep},
    {0x8000001e, kAny, R::kEax, P::kKeep}, {0x8000001e, kAny, R::kEbx, P::kKeep},
    {0x8000001e, kAny, R::kEcx, P::kKeep}, {0x8000001e, kAny, R::kEdx, P::kKeep},
    {0x8000001f, kAny, R::kEax, P::kHide}, {0x8000001f, kAny, R::kEbx, P::kHide},  // SEV
    {0x8000001f, kAny, R::kEcx, P::kHide}, {0x8000001f, kAny, R::kEdx, P::kHide},
    {0x80000020, kAny, R::kEax, P::kHide}, {0x80000020, kAny, R::kEbx, P::kHide},  // PQoS
    {0x80000020, kAny, R::kEcx, P::kHide}, {0x80000020, kAny, R::kEdx, P::kHide},
    {0x80000021, kAny, R::kEax, P::kAnd},
    {0x80000022, kAny, R::kEax, P::kHide}, {0x80000022, kAny, R::kEbx, P::kHide},  // PMU v2
    {0x80000022, kAny, R::kEcx, P::kHide}, {0x80000022, kAny, R::kEdx, P::kHide},
};

struct XsaveUser {
  uint64_t components;
  uint32_t leaf;
  uint32_t subleaf;
  R reg;
  uint32_t bits;
};

constexpr uint64_t kAvx = 1ull << 2, kMpx = 3ull << 3, kAvx512 = 7ull << 5, kPkru = 1ull << 9,
                   kAmx = 3ull << 17;

const XsaveUser kXsaveUsers[] = {
    {kAvx, 1, 0, R::kEcx, B(12) | B(28) | B(29)},               // fma avx f16c
    {kAvx, 7, 0, R::kEbx, B(5)},                                // avx2
    {kAvx, 7, 0, R::kEcx, B(9) | B(10)},                        // vaes vpclmulqdq
    {kAvx, 7, 1, R::kEax, B(4) | B(23)},                        // avx_vnni avx_ifma
    {kMpx, 7, 0, R::kEbx, B(14)},                                         // mpx
    {kAvx512, 7, 0, R::kEbx,
     B(16) | B(17) | B(21) | B(26) | B(27) | B(28) | B(30) | B(31)},      // avx512*
    {kAvx512, 7, 0, R::kEcx, B(1) | B(6) | B(11) | B(12) | B(14)},
    {kAvx512, 7, 0, R::kEdx, B(2) | B(3) | B(8) | B(23)},
    {kAvx512, 7, 1, R::kEax, B(5)},                                       // avx512_bf16
    {kPkru, 7, 0, R::kEcx, B(3)},                                         // pku
    {kAmx, 7, 0, R::kEdx, B(22) | B(24) | B(25)},                         // amx_*
    {kAmx, 7, 1, R::kEax, B(21)},                                         // amx_fp16
};

const Names* NamesFor(uint32_t leaf, uint32_t subleaf, R reg) {
  for (const NamedRegister& n : kNamed) {
    if (n.leaf == leaf && n.subleaf == subleaf && n.reg == reg) return n.names;
  }
  return nullptr;
}

}  // namespace

std::span<const CpuidRegisterRule> CpuidRules() { return kRules; }

CpuidRegisterRule RuleFor(uint32_t leaf, uint32_t subleaf, CpuidRegister reg) {
  for (const CpuidRegisterRule& r : kRules) {
    if (r.leaf == leaf && r.reg == reg && (!r.subleaf || *r.subleaf == subleaf)) return r;
  }
  return {leaf, subleaf, reg, PoolRule::kSame};
}

const char* RegisterName(CpuidRegister reg) {
  switch (reg) {
    case R::kEax: return "eax";
    case R::kEbx: return "ebx";
    case R::kEcx: return "ecx";
    case R::kEdx: return "edx";
  }
  return "?";
}

std::string FeatureName(uint32_t leaf, uint32_t subleaf, CpuidRegister reg, int bit) {
  if (bit < 0 || bit > 31) return "";
  const Names* names = NamesFor(leaf, subleaf, reg);
  if (names == nullptr || (*names)[bit] == nullptr) return "";
  return (*names)[bit];
}

uint32_t FeaturesNeedingXsave(uint64_t components, uint32_t leaf, uint32_t subleaf,
                              CpuidRegister reg) {
  uint32_t bits = 0;
  for (const XsaveUser& u : kXsaveUsers) {
    if ((u.components & components) && u.leaf == leaf && u.subleaf == subleaf && u.reg == reg) {
      bits |= u.bits;
    }
  }
  return bits;
}

std::string DescribeXsaveComponent(int component) {
  std::string name = FeatureName(0xd, 0, R::kEax, component);
  return name.empty() ? absl::StrFormat("xsave component %d", component)
                      : absl::StrFormat("%s (xsave component %d)", name, component);
}

std::string DescribeBit(uint32_t leaf, uint32_t subleaf, CpuidRegister reg, int bit) {
  std::string where = subleaf == 0
                          ? absl::StrFormat("leaf 0x%x %s bit %d", leaf, RegisterName(reg), bit)
                          : absl::StrFormat("leaf 0x%x.%u %s bit %d", leaf, subleaf,
                                            RegisterName(reg), bit);
  std::string name = FeatureName(leaf, subleaf, reg, bit);
  return name.empty() ? where : absl::StrFormat("%s (%s)", name, where);
}

}  // namespace vcpu
