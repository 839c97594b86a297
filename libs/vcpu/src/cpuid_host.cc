// GuestVisibleCpuid: the part of cpuid.h that needs a KVM handle (kept out
// of cpuid.cc, which fuzz targets build without the KVM code).
#include <memory>

#include "kindling/status_macros.h"
#include "vcpu/cpuid.h"
#include "vcpu/kvm.h"

namespace vcpu {

absl::StatusOr<CpuidTable> GuestVisibleCpuid(const Kvm& kvm) {
  ASSIGN_OR_RETURN(CpuidTable supported, kvm.GetSupportedCpuid());
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm, kvm.CreateVm());
  ASSIGN_OR_RETURN(std::unique_ptr<Vcpu> probe, vm->CreateVcpu(0));
  RETURN_IF_ERROR(probe->SetCpuid(supported));
  ASSIGN_OR_RETURN(CpuidTable seen, probe->GetCpuid());
  // Some kernels (6.1 under nested SVM) pad the table with zeroed entries,
  // which read as further copies of leaf 0: the first entry of a key wins.
  CpuidTable out;
  for (const kvm_cpuid_entry2& e : seen) {
    uint32_t sub = (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) ? e.index : 0;
    if (FindCpuid(out, e.function, sub) == nullptr) out.push_back(e);
  }
  return out;
}

}  // namespace vcpu
