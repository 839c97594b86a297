// CollectCpuProfile: the one part of cpu_profile.h that needs /dev/kvm.
#include <memory>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "vcpu/cpu_profile.h"

namespace vcpu {
namespace {

bool IsVmxCapabilityMsr(uint32_t index) { return index >= 0x480 && index <= 0x491; }

absl::StatusOr<uint32_t> FreshVcpuTscKhz(const Kvm& kvm) {
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm, kvm.CreateVm());
  ASSIGN_OR_RETURN(std::unique_ptr<Vcpu> cpu, vm->CreateVcpu(0));
  return cpu->GetTscKhz();
}

}  // namespace

absl::StatusOr<CpuProfile> CollectCpuProfile(const Kvm& kvm, const std::string& host) {
  ASSIGN_OR_RETURN(CpuidTable cpuid, GuestVisibleCpuid(kvm));
  CpuProfile p = ProfileFromCpuid(cpuid, host);
  p.set_source(absl::StrCat("KVM_GET_SUPPORTED_CPUID as a vCPU sees it, and "
                            "KVM_GET_MSR_FEATURE_INDEX_LIST, on ", host));
  ASSIGN_OR_RETURN(std::vector<kvm_msr_entry> msrs, kvm.GetFeatureMsrs());
  for (const kvm_msr_entry& m : msrs) {
    if (IsVmxCapabilityMsr(m.index)) continue;
    auto* out = p.add_feature_msrs();
    out->set_index(m.index);
    out->set_value(m.data);
  }
  ASSIGN_OR_RETURN(uint32_t khz, FreshVcpuTscKhz(kvm));
  p.set_tsc_khz(khz);
  p.set_tsc_scaling(kvm.CheckExtension(KVM_CAP_TSC_CONTROL) > 0);
  return p;
}

}  // namespace vcpu
