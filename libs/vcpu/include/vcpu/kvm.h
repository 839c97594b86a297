// Owned handles for the KVM API: Kvm (the /dev/kvm system fd) → Vm → Vcpu.
//
// Each handle owns one fd; every ioctl the project makes goes through these
// three classes, and each failure comes back as an absl::Status naming the
// ioctl. Missing capabilities are reported by name.
//
//   ASSIGN_OR_RETURN(auto kvm, Kvm::Open());
//   RETURN_IF_ERROR(kvm->RequireCapabilities({{KVM_CAP_IRQFD, "KVM_CAP_IRQFD"}}));
//   ASSIGN_OR_RETURN(auto vm, kvm->CreateVm());
//   RETURN_IF_ERROR(vm->SetUserMemoryRegion(0, region));
//   ASSIGN_OR_RETURN(auto vcpu, vm->CreateVcpu(0));
//   ASSIGN_OR_RETURN(VcpuExit exit, vcpu->Run());
#ifndef VCPU_KVM_H_
#define VCPU_KVM_H_

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "vcpu/vcpu_exit.h"
#include "vm-memory/guest_memory.h"
#include "vm-memory/mapped_region.h"
#include "vm-memory/unique_fd.h"

namespace vcpu {

class Vm;
class Vcpu;

struct NamedCapability {
  int cap;
  const char* name;
};

// The capabilities kindling cannot run without.
std::vector<NamedCapability> RequiredCapabilities();

class Kvm {
 public:
  // Opens /dev/kvm (or `path`) and checks the API version is 12.
  static absl::StatusOr<std::unique_ptr<Kvm>> Open(
      const std::string& path = "/dev/kvm");

  // KVM_CHECK_EXTENSION: 0 if absent, otherwise a capability-specific value.
  int CheckExtension(int cap) const;
  // Error naming every missing capability, or OK.
  absl::Status RequireCapabilities(std::span<const NamedCapability> caps) const;
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> GetSupportedCpuid() const;
  absl::StatusOr<std::vector<uint32_t>> GetMsrIndexList() const;
  // The feature MSRs (KVM_GET_MSR_FEATURE_INDEX_LIST, each read with
  // KVM_GET_MSRS on /dev/kvm): what KVM lets a guest see, e.g.
  // IA32_ARCH_CAPABILITIES. Empty without KVM_CAP_GET_MSR_FEATURES.
  absl::StatusOr<std::vector<kvm_msr_entry>> GetFeatureMsrs() const;
  absl::StatusOr<std::unique_ptr<Vm>> CreateVm() const;

  int fd() const { return fd_.get(); }

 private:
  Kvm(vm_memory::UniqueFd fd, size_t run_size)
      : fd_(std::move(fd)), vcpu_mmap_size_(run_size) {}
  vm_memory::UniqueFd fd_;
  size_t vcpu_mmap_size_;
};

enum class IrqchipMode {
  kFull,   // LAPIC, IOAPIC and PIC in the kernel (KVM_CREATE_IRQCHIP)
  kSplit,  // LAPIC in the kernel, IOAPIC/PIC in the VMM (KVM_CAP_SPLIT_IRQCHIP)
};

class Vm {
 public:
  // Registers `region` as memslot `slot` (flags e.g. KVM_MEM_LOG_DIRTY_PAGES).
  absl::Status SetUserMemoryRegion(uint32_t slot,
                                   const vm_memory::GuestRegion& region,
                                   uint32_t flags = 0);
  // x86 housekeeping KVM needs below 4 GiB before the first vCPU runs.
  absl::Status SetTssAddress(uint64_t addr);
  absl::Status SetIdentityMapAddress(uint64_t addr);
  absl::Status CreateIrqchip(IrqchipMode mode, uint32_t ioapic_pins = 24);
  absl::Status CreatePit();
  // Level of a GSI (full irqchip): KVM_IRQ_LINE.
  absl::Status SetIrqLine(uint32_t gsi, bool level);
  // Pulses an edge-triggered GSI (assert then deassert).
  absl::Status PulseIrq(uint32_t gsi);
  // Replaces the GSI routing table.
  absl::Status SetGsiRouting(std::span<const kvm_irq_routing_entry> entries);
  absl::Status SignalMsi(uint64_t address, uint32_t data);
  absl::Status AssignIrqfd(int eventfd, uint32_t gsi);
  absl::Status DeassignIrqfd(int eventfd, uint32_t gsi);
  // Notification writes to `addr` (MMIO, or port I/O if pio) signal eventfd;
  // with `datamatch`, only writes of that value do.
  absl::Status AssignIoeventfd(int eventfd, uint64_t addr, uint32_t len,
                               bool pio,
                               std::optional<uint64_t> datamatch = std::nullopt);
  absl::Status DeassignIoeventfd(int eventfd, uint64_t addr, uint32_t len,
                                 bool pio,
                                 std::optional<uint64_t> datamatch = std::nullopt);
  absl::Status EnableCapability(uint32_t cap, uint64_t arg0 = 0);
  // KVM_GET_DIRTY_LOG for one memslot; one bit per 4 KiB page.
  absl::StatusOr<std::vector<uint64_t>> GetDirtyLog(uint32_t slot,
                                                    uint64_t slot_size);
  absl::StatusOr<kvm_clock_data> GetClock() const;
  absl::Status SetClock(const kvm_clock_data& clock);
  // The in-kernel irqchip (IrqchipMode::kFull): chip 0 is the master PIC,
  // 1 the slave PIC, 2 the IOAPIC; and the PIT. For snapshots.
  absl::StatusOr<kvm_irqchip> GetIrqchip(uint32_t chip_id) const;
  absl::Status SetIrqchip(const kvm_irqchip& chip);
  absl::StatusOr<kvm_pit_state2> GetPit() const;
  absl::Status SetPit(const kvm_pit_state2& pit);
  absl::StatusOr<std::unique_ptr<Vcpu>> CreateVcpu(uint32_t id);

  int fd() const { return fd_.get(); }
  const Kvm& kvm() const { return *kvm_; }

 private:
  friend class Kvm;
  absl::Status Ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                         std::optional<uint64_t> datamatch, bool deassign);
  Vm(const Kvm* kvm, vm_memory::UniqueFd fd, size_t run_size)
      : kvm_(kvm), fd_(std::move(fd)), vcpu_mmap_size_(run_size) {}
  const Kvm* kvm_;
  vm_memory::UniqueFd fd_;
  size_t vcpu_mmap_size_;
};

class Vcpu {
 public:
  // Enters the guest until the next exit that needs the VMM. Port and MMIO
  // reads are completed by filling VcpuExit's data before the next Run().
  absl::StatusOr<VcpuExit> Run();
  // Makes a Run() in progress (or the next one) return kInterrupted at once.
  void SetImmediateExit(bool on);

  absl::StatusOr<kvm_regs> GetRegs() const;
  absl::Status SetRegs(const kvm_regs& regs);
  absl::StatusOr<kvm_sregs> GetSregs() const;
  absl::Status SetSregs(const kvm_sregs& sregs);
  absl::StatusOr<kvm_fpu> GetFpu() const;
  absl::Status SetFpu(const kvm_fpu& fpu);
  absl::StatusOr<std::vector<uint8_t>> GetXsave() const;
  absl::Status SetXsave(std::span<const uint8_t> xsave);
  absl::StatusOr<kvm_xcrs> GetXcrs() const;
  absl::Status SetXcrs(const kvm_xcrs& xcrs);
  absl::StatusOr<kvm_debugregs> GetDebugRegs() const;
  absl::Status SetDebugRegs(const kvm_debugregs& dregs);
  absl::StatusOr<kvm_lapic_state> GetLapic() const;
  absl::Status SetLapic(const kvm_lapic_state& lapic);
  absl::StatusOr<kvm_vcpu_events> GetVcpuEvents() const;
  absl::Status SetVcpuEvents(const kvm_vcpu_events& events);
  absl::StatusOr<kvm_mp_state> GetMpState() const;
  absl::Status SetMpState(const kvm_mp_state& state);
  absl::Status SetCpuid(std::span<const kvm_cpuid_entry2> entries);
  // The CPUID last set (KVM_GET_CPUID2), for snapshots.
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> GetCpuid() const;
  // Reads the given MSRs; indices KVM does not return are omitted.
  absl::StatusOr<std::vector<kvm_msr_entry>> GetMsrs(
      std::span<const uint32_t> indices) const;
  absl::Status SetMsrs(std::span<const kvm_msr_entry> msrs);
  absl::Status KvmclockCtrl();
  // The vCPU's TSC frequency in kHz (KVM_GET_TSC_KHZ).
  absl::StatusOr<uint32_t> GetTscKhz() const;
  // A file descriptor for the vCPU's binary statistics (KVM_GET_STATS_FD).
  absl::StatusOr<vm_memory::UniqueFd> GetStatsFd() const;

  uint32_t id() const { return id_; }
  int fd() const { return fd_.get(); }

 private:
  friend class Vm;
  Vcpu(uint32_t id, vm_memory::UniqueFd fd, vm_memory::MappedRegion run)
      : id_(id), fd_(std::move(fd)), run_mapping_(std::move(run)) {}
  kvm_run* run() const {
    return reinterpret_cast<kvm_run*>(run_mapping_.data());
  }
  absl::StatusOr<VcpuExit> DecodeExit();

  uint32_t id_;
  vm_memory::UniqueFd fd_;
  vm_memory::MappedRegion run_mapping_;
  bool xsave2_ = false;
  size_t xsave_size_ = 4096;  // struct kvm_xsave in C; see src/kvm_abi.h
};

}  // namespace vcpu

#endif  // VCPU_KVM_H_
