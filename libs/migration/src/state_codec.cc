#include "migration/state_codec.h"

#include <cstring>
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace migration {
namespace {

template <typename T>
std::string Bytes(const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  return std::string(reinterpret_cast<const char*>(&value), sizeof(T));
}

// `bytes` must be exactly one T; `what` names the field in the error.
template <typename T>
absl::StatusOr<T> FromBytes(const std::string& bytes, const char* what) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (bytes.size() != sizeof(T)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": ", bytes.size(), " bytes, expected ", sizeof(T)));
  }
  T value;
  std::memcpy(&value, bytes.data(), sizeof(T));
  return value;
}

#define DECODE_OR_RETURN(dst, type, bytes, what) \
  do {                                           \
    auto v_ = FromBytes<type>(bytes, what);      \
    if (!v_.ok()) return v_.status();            \
    dst = *v_;                                   \
  } while (0)

}  // namespace

v1::Vcpu EncodeVcpu(const vcpu::VcpuState& st,
                    std::span<const kvm_cpuid_entry2> cpuid) {
  v1::Vcpu m;
  m.set_regs(Bytes(st.regs));
  m.set_sregs(Bytes(st.sregs));
  m.set_fpu(Bytes(st.fpu));
  m.set_xsave(std::string(st.xsave.begin(), st.xsave.end()));
  m.set_xcrs(Bytes(st.xcrs));
  m.set_debugregs(Bytes(st.debugregs));
  m.set_lapic(Bytes(st.lapic));
  m.set_events(Bytes(st.events));
  m.set_mp_state(Bytes(st.mp_state));
  for (const kvm_msr_entry& e : st.msrs) {
    v1::Msr* msr = m.add_msrs();
    msr->set_index(e.index);
    msr->set_value(e.data);
  }
  m.set_cpuid(std::string(reinterpret_cast<const char*>(cpuid.data()),
                          cpuid.size_bytes()));
  return m;
}

absl::StatusOr<vcpu::VcpuState> DecodeVcpu(const v1::Vcpu& m) {
  vcpu::VcpuState st;
  DECODE_OR_RETURN(st.regs, kvm_regs, m.regs(), "vcpu regs");
  DECODE_OR_RETURN(st.sregs, kvm_sregs, m.sregs(), "vcpu sregs");
  DECODE_OR_RETURN(st.fpu, kvm_fpu, m.fpu(), "vcpu fpu");
  DECODE_OR_RETURN(st.xcrs, kvm_xcrs, m.xcrs(), "vcpu xcrs");
  DECODE_OR_RETURN(st.debugregs, kvm_debugregs, m.debugregs(), "vcpu debugregs");
  DECODE_OR_RETURN(st.lapic, kvm_lapic_state, m.lapic(), "vcpu lapic");
  DECODE_OR_RETURN(st.events, kvm_vcpu_events, m.events(), "vcpu events");
  DECODE_OR_RETURN(st.mp_state, kvm_mp_state, m.mp_state(), "vcpu mp_state");
  if (m.xsave().size() < kMinXsaveBytes || m.xsave().size() > kMaxXsaveBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vcpu xsave: ", m.xsave().size(), " bytes, expected ", kMinXsaveBytes,
        " to ", kMaxXsaveBytes));
  }
  st.xsave.assign(m.xsave().begin(), m.xsave().end());
  if (static_cast<size_t>(m.msrs_size()) > kMaxMsrs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vcpu msrs: ", m.msrs_size(), " entries, at most ", kMaxMsrs));
  }
  for (const v1::Msr& msr : m.msrs()) {
    kvm_msr_entry e = {};
    e.index = msr.index();
    e.data = msr.value();
    st.msrs.push_back(e);
  }
  return st;
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> DecodeCpuid(const v1::Vcpu& m) {
  const std::string& b = m.cpuid();
  size_t n = b.size() / sizeof(kvm_cpuid_entry2);
  if (b.empty() || b.size() % sizeof(kvm_cpuid_entry2) != 0 || n > kMaxCpuidEntries) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vcpu cpuid: ", b.size(), " bytes, expected 1 to ", kMaxCpuidEntries,
        " entries of ", sizeof(kvm_cpuid_entry2)));
  }
  std::vector<kvm_cpuid_entry2> out(n);
  std::memcpy(out.data(), b.data(), b.size());
  return out;
}

std::string EncodeClock(const kvm_clock_data& clock) { return Bytes(clock); }

absl::StatusOr<kvm_clock_data> DecodeClock(const std::string& bytes) {
  return FromBytes<kvm_clock_data>(bytes, "kvm_clock");
}

v1::KernelIrqchip EncodeKernelIrqchip(const KernelIrqchipState& st) {
  v1::KernelIrqchip m;
  m.set_pic_master(Bytes(st.pic_master));
  m.set_pic_slave(Bytes(st.pic_slave));
  m.set_ioapic(Bytes(st.ioapic));
  m.set_pit(Bytes(st.pit));
  return m;
}

absl::StatusOr<KernelIrqchipState> DecodeKernelIrqchip(const v1::KernelIrqchip& m) {
  KernelIrqchipState st;
  DECODE_OR_RETURN(st.pic_master, kvm_irqchip, m.pic_master(), "irqchip pic_master");
  DECODE_OR_RETURN(st.pic_slave, kvm_irqchip, m.pic_slave(), "irqchip pic_slave");
  DECODE_OR_RETURN(st.ioapic, kvm_irqchip, m.ioapic(), "irqchip ioapic");
  DECODE_OR_RETURN(st.pit, kvm_pit_state2, m.pit(), "irqchip pit");
  // The chip ids select what KVM_SET_IRQCHIP writes: they must be the
  // ones each field stands for.
  if (st.pic_master.chip_id != KVM_IRQCHIP_PIC_MASTER ||
      st.pic_slave.chip_id != KVM_IRQCHIP_PIC_SLAVE ||
      st.ioapic.chip_id != KVM_IRQCHIP_IOAPIC) {
    return absl::InvalidArgumentError("irqchip: chip ids do not match their fields");
  }
  return st;
}

v1::UserspaceIoapic EncodeIoapic(const vcpu::Ioapic::State& st) {
  v1::UserspaceIoapic m;
  m.set_version(1);
  m.set_id(st.id);
  m.set_select(st.select);
  for (uint64_t r : st.redirection) m.add_redirection(r);
  for (bool l : st.level) m.add_level(l);
  return m;
}

absl::StatusOr<vcpu::Ioapic::State> DecodeIoapic(const v1::UserspaceIoapic& m) {
  if (m.version() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ioapic state version ", m.version(), " is not supported (this build reads 1)"));
  }
  constexpr int kPins = vcpu::Ioapic::kPins;
  if (m.redirection_size() != kPins || m.level_size() != kPins) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ioapic: ", m.redirection_size(), " redirection entries and ",
        m.level_size(), " levels, expected ", kPins, " of each"));
  }
  if (m.id() > 0xff || m.select() > 0xff) {
    return absl::InvalidArgumentError("ioapic: id or select out of range (0..255)");
  }
  vcpu::Ioapic::State st;
  st.id = static_cast<uint8_t>(m.id());
  st.select = m.select();
  for (int i = 0; i < kPins; ++i) {
    st.redirection[i] = m.redirection(i);
    st.level[i] = m.level(i);
  }
  return st;
}

v1::Serial EncodeSerial(const vcpu::Serial::State& st) {
  v1::Serial m;
  m.set_ier(st.ier);
  m.set_lcr(st.lcr);
  m.set_mcr(st.mcr);
  m.set_scr(st.scr);
  m.set_dll(st.dll);
  m.set_dlh(st.dlh);
  m.set_msr(st.msr);
  m.set_thr_empty_pending(st.thr_empty_pending);
  m.set_input(st.input);
  return m;
}

absl::StatusOr<vcpu::Serial::State> DecodeSerial(const v1::Serial& m) {
  for (uint32_t r : {m.ier(), m.lcr(), m.mcr(), m.scr(), m.dll(), m.dlh(), m.msr()}) {
    if (r > 0xff) {
      return absl::InvalidArgumentError(absl::StrCat(
          "serial: register value ", r, " does not fit in a byte"));
    }
  }
  if (m.input().size() > vcpu::Serial::kInputCapacity) {
    return absl::InvalidArgumentError(absl::StrCat(
        "serial: ", m.input().size(), " queued input bytes, at most ",
        vcpu::Serial::kInputCapacity));
  }
  vcpu::Serial::State st;
  st.ier = m.ier();
  st.lcr = m.lcr();
  st.mcr = m.mcr();
  st.scr = m.scr();
  st.dll = m.dll();
  st.dlh = m.dlh();
  st.msr = m.msr();
  st.thr_empty_pending = m.thr_empty_pending();
  st.input = m.input();
  return st;
}

}  // namespace migration
