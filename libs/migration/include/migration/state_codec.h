// Conversions between the live state of libs/vcpu objects and the
// kindling.migration.v1 protobuf messages, in both directions. Decoding is
// the trust boundary: every length is checked against the kernel structure
// it becomes, and every error names the field.
//
//   v1::Vcpu msg = EncodeVcpu(state, cpuid);
//   ASSIGN_OR_RETURN(vcpu::VcpuState back, DecodeVcpu(msg));
#ifndef MIGRATION_STATE_CODEC_H_
#define MIGRATION_STATE_CODEC_H_

#include <linux/kvm.h>

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "migration/snapshot.pb.h"
#include "vcpu/devices/ioapic.h"
#include "vcpu/devices/serial.h"
#include "vcpu/vcpu_state.h"

namespace migration {

namespace v1 = ::kindling::migration::v1;

// Bounds on what a decoder accepts.
// The legacy 4 KiB area (sizeof(kvm_xsave) in C++ counts a flexible
// array member's padding, so it is spelled out).
inline constexpr size_t kMinXsaveBytes = 4096;
inline constexpr size_t kMaxXsaveBytes = 64 << 10;
inline constexpr size_t kMaxCpuidEntries = 256;
inline constexpr size_t kMaxMsrs = 1024;

v1::Vcpu EncodeVcpu(const vcpu::VcpuState& state,
                    std::span<const kvm_cpuid_entry2> cpuid);
absl::StatusOr<vcpu::VcpuState> DecodeVcpu(const v1::Vcpu& msg);
absl::StatusOr<std::vector<kvm_cpuid_entry2>> DecodeCpuid(const v1::Vcpu& msg);

std::string EncodeClock(const kvm_clock_data& clock);
absl::StatusOr<kvm_clock_data> DecodeClock(const std::string& bytes);

// The in-kernel irqchip (full mode).
struct KernelIrqchipState {
  kvm_irqchip pic_master;
  kvm_irqchip pic_slave;
  kvm_irqchip ioapic;
  kvm_pit_state2 pit;
};
v1::KernelIrqchip EncodeKernelIrqchip(const KernelIrqchipState& state);
absl::StatusOr<KernelIrqchipState> DecodeKernelIrqchip(const v1::KernelIrqchip& msg);

v1::UserspaceIoapic EncodeIoapic(const vcpu::Ioapic::State& state);
absl::StatusOr<vcpu::Ioapic::State> DecodeIoapic(const v1::UserspaceIoapic& msg);

v1::Serial EncodeSerial(const vcpu::Serial::State& state);
absl::StatusOr<vcpu::Serial::State> DecodeSerial(const v1::Serial& msg);

}  // namespace migration

#endif  // MIGRATION_STATE_CODEC_H_
