#include "vcpu/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kvm_abi.h"

namespace vcpu {
namespace {

using vm_memory::MappedRegion;
using vm_memory::UniqueFd;

constexpr int kKvmApiVersion = 12;
constexpr size_t kMaxCpuidEntries = 256;
constexpr size_t kMaxMsrIndices = 1024;

absl::Status IoctlError(const char* what) {
  return absl::ErrnoToStatus(errno, absl::StrCat(what, " failed"));
}

// Runs ioctl, retrying on EINTR (except where the caller wants EINTR).
template <typename Arg>
int Ioctl(int fd, unsigned long request, Arg arg) {
  int r;
  do {
    // SAFETY: every call site passes the argument type its request expects.
    r = ::ioctl(fd, request, arg);
  } while (r < 0 && errno == EINTR);
  return r;
}

#define KVM_IOCTL_OR_RETURN(fd, req, arg)          \
  do {                                             \
    if (Ioctl((fd), (req), (arg)) < 0) return IoctlError(#req); \
  } while (false)

template <typename T>
absl::StatusOr<T> GetStruct(int fd, unsigned long req, const char* name) {
  T value;
  std::memset(&value, 0, sizeof(value));
  if (Ioctl(fd, req, &value) < 0) return IoctlError(name);
  return value;
}

}  // namespace

std::vector<NamedCapability> RequiredCapabilities() {
  return {
      {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
      {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
      {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
      {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
      {KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"},
      {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
      {KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS"},
      {KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS"},
      {KVM_CAP_XSAVE, "KVM_CAP_XSAVE"},
      {KVM_CAP_XCRS, "KVM_CAP_XCRS"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
      {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
  };
}

absl::StatusOr<std::unique_ptr<Kvm>> Kvm::Open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("cannot open ", path,
                            " (is KVM available and are you allowed to use it?)"));
  }
  int version = Ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (version != kKvmApiVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " speaks KVM API version ", version, ", kindling needs ",
        kKvmApiVersion));
  }
  int run_size = Ioctl(fd.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < static_cast<int>(sizeof(kvm_run))) {
    return IoctlError("KVM_GET_VCPU_MMAP_SIZE");
  }
  return std::unique_ptr<Kvm>(new Kvm(std::move(fd), run_size));
}

int Kvm::CheckExtension(int cap) const {
  int r = Ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

absl::Status Kvm::RequireCapabilities(
    std::span<const NamedCapability> caps) const {
  std::vector<std::string> missing;
  for (const NamedCapability& c : caps) {
    if (CheckExtension(c.cap) <= 0) missing.push_back(c.name);
  }
  if (missing.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "KVM lacks required capabilities: ", absl::StrJoin(missing, ", ")));
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> Kvm::GetSupportedCpuid() const {
  abi::FlexArray<abi::Cpuid2Header, kvm_cpuid_entry2> cpuid(kMaxCpuidEntries);
  cpuid.header()->nent = kMaxCpuidEntries;
  if (Ioctl(fd_.get(), abi::kGetSupportedCpuid, cpuid.header()) < 0) {
    return IoctlError("KVM_GET_SUPPORTED_CPUID");
  }
  return cpuid.Take(cpuid.header()->nent);
}

absl::StatusOr<std::vector<uint32_t>> Kvm::GetMsrIndexList() const {
  abi::FlexArray<abi::MsrListHeader, uint32_t> list(kMaxMsrIndices);
  list.header()->nmsrs = kMaxMsrIndices;
  if (Ioctl(fd_.get(), abi::kGetMsrIndexList, list.header()) < 0) {
    return IoctlError("KVM_GET_MSR_INDEX_LIST");
  }
  return list.Take(list.header()->nmsrs);
}

absl::StatusOr<std::vector<kvm_msr_entry>> Kvm::GetFeatureMsrs() const {
  if (CheckExtension(KVM_CAP_GET_MSR_FEATURES) <= 0) return std::vector<kvm_msr_entry>{};
  abi::FlexArray<abi::MsrListHeader, uint32_t> list(kMaxMsrIndices);
  list.header()->nmsrs = kMaxMsrIndices;
  if (Ioctl(fd_.get(), abi::kGetMsrFeatureIndexList, list.header()) < 0) {
    return IoctlError("KVM_GET_MSR_FEATURE_INDEX_LIST");
  }
  std::vector<kvm_msr_entry> out;
  for (uint32_t index : list.Take(list.header()->nmsrs)) {
    abi::FlexArray<abi::MsrsHeader, kvm_msr_entry> one(1);
    one.header()->nmsrs = 1;
    one.entries()[0].index = index;
    // An MSR KVM lists but cannot read on this host is left out.
    if (Ioctl(fd_.get(), abi::kGetMsrs, one.header()) == 1) out.push_back(one.entries()[0]);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Vm>> Kvm::CreateVm() const {
  int fd = Ioctl(fd_.get(), KVM_CREATE_VM, 0);
  if (fd < 0) return IoctlError("KVM_CREATE_VM");
  return std::unique_ptr<Vm>(new Vm(this, UniqueFd(fd), vcpu_mmap_size_));
}

absl::Status Vm::SetUserMemoryRegion(uint32_t slot,
                                     const vm_memory::GuestRegion& region,
                                     uint32_t flags) {
  kvm_userspace_memory_region r = {};
  r.slot = slot;
  r.flags = flags;
  r.guest_phys_addr = region.start().value;
  r.memory_size = region.size();
  r.userspace_addr = region.host_address().value;
  if (Ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &r) < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrFormat("KVM_SET_USER_MEMORY_REGION slot %u at 0x%x "
                               "(%u bytes) failed",
                               slot, r.guest_phys_addr, r.memory_size));
  }
  return absl::OkStatus();
}

absl::Status Vm::SetTssAddress(uint64_t addr) {
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_SET_TSS_ADDR, addr);
  return absl::OkStatus();
}

absl::Status Vm::SetIdentityMapAddress(uint64_t addr) {
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr);
  return absl::OkStatus();
}

absl::Status Vm::CreateIrqchip(IrqchipMode mode, uint32_t ioapic_pins) {
  if (mode == IrqchipMode::kFull) {
    KVM_IOCTL_OR_RETURN(fd_.get(), KVM_CREATE_IRQCHIP, 0);
    return absl::OkStatus();
  }
  if (kvm_->CheckExtension(KVM_CAP_SPLIT_IRQCHIP) <= 0) {
    return absl::FailedPreconditionError(
        "KVM lacks KVM_CAP_SPLIT_IRQCHIP (needed for --irqchip split)");
  }
  return EnableCapability(KVM_CAP_SPLIT_IRQCHIP, ioapic_pins);
}

absl::Status Vm::CreatePit() {
  kvm_pit_config config = {};
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_CREATE_PIT2, &config);
  return absl::OkStatus();
}

absl::Status Vm::SetIrqLine(uint32_t gsi, bool level) {
  kvm_irq_level irq = {};
  irq.irq = gsi;
  irq.level = level ? 1 : 0;
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_IRQ_LINE, &irq);
  return absl::OkStatus();
}

absl::Status Vm::PulseIrq(uint32_t gsi) {
  absl::Status s = SetIrqLine(gsi, true);
  if (!s.ok()) return s;
  return SetIrqLine(gsi, false);
}

absl::Status Vm::SetGsiRouting(std::span<const kvm_irq_routing_entry> entries) {
  abi::FlexArray<abi::IrqRoutingHeader, kvm_irq_routing_entry> routing(entries);
  routing.header()->nr = entries.size();
  if (Ioctl(fd_.get(), abi::kSetGsiRouting, routing.header()) < 0) {
    return IoctlError("KVM_SET_GSI_ROUTING");
  }
  return absl::OkStatus();
}

absl::Status Vm::SignalMsi(uint64_t address, uint32_t data) {
  kvm_msi msi = {};
  msi.address_lo = static_cast<uint32_t>(address);
  msi.address_hi = static_cast<uint32_t>(address >> 32);
  msi.data = data;
  if (Ioctl(fd_.get(), KVM_SIGNAL_MSI, &msi) < 0) {
    return IoctlError("KVM_SIGNAL_MSI");
  }
  return absl::OkStatus();
}

absl::Status Vm::AssignIrqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd irqfd = {};
  irqfd.fd = eventfd;
  irqfd.gsi = gsi;
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_IRQFD, &irqfd);
  return absl::OkStatus();
}

absl::Status Vm::DeassignIrqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd irqfd = {};
  irqfd.fd = eventfd;
  irqfd.gsi = gsi;
  irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_IRQFD, &irqfd);
  return absl::OkStatus();
}

absl::Status Vm::AssignIoeventfd(int eventfd, uint64_t addr, uint32_t len,
                                 bool pio, std::optional<uint64_t> datamatch) {
  return Ioeventfd(eventfd, addr, len, pio, datamatch, false);
}

absl::Status Vm::DeassignIoeventfd(int eventfd, uint64_t addr, uint32_t len,
                                   bool pio, std::optional<uint64_t> datamatch) {
  return Ioeventfd(eventfd, addr, len, pio, datamatch, true);
}

absl::Status Vm::Ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                           std::optional<uint64_t> datamatch, bool deassign) {
  kvm_ioeventfd io = {};
  io.addr = addr;
  io.len = len;
  io.fd = eventfd;
  io.flags = pio ? KVM_IOEVENTFD_FLAG_PIO : 0;
  if (datamatch) {
    io.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    io.datamatch = *datamatch;
  }
  if (deassign) io.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_IOEVENTFD, &io);
  return absl::OkStatus();
}

absl::Status Vm::EnableCapability(uint32_t cap, uint64_t arg0) {
  kvm_enable_cap enable = {};
  enable.cap = cap;
  enable.args[0] = arg0;
  if (Ioctl(fd_.get(), KVM_ENABLE_CAP, &enable) < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("KVM_ENABLE_CAP ", cap, " failed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> Vm::GetDirtyLog(uint32_t slot,
                                                      uint64_t slot_size) {
  std::vector<uint64_t> bitmap((slot_size / 4096 + 63) / 64);
  kvm_dirty_log log = {};
  log.slot = slot;
  log.dirty_bitmap = bitmap.data();
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_GET_DIRTY_LOG, &log);
  return bitmap;
}

absl::StatusOr<kvm_clock_data> Vm::GetClock() const {
  return GetStruct<kvm_clock_data>(fd_.get(), KVM_GET_CLOCK, "KVM_GET_CLOCK");
}

absl::Status Vm::SetClock(const kvm_clock_data& clock) {
  kvm_clock_data c = clock;
  c.flags = 0;  // only the clock value is restored
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_SET_CLOCK, &c);
  return absl::OkStatus();
}

absl::StatusOr<kvm_irqchip> Vm::GetIrqchip(uint32_t chip_id) const {
  kvm_irqchip chip = {};
  chip.chip_id = chip_id;
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_GET_IRQCHIP, &chip);
  return chip;
}

absl::Status Vm::SetIrqchip(const kvm_irqchip& chip) {
  kvm_irqchip c = chip;
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_SET_IRQCHIP, &c);
  return absl::OkStatus();
}

absl::StatusOr<kvm_pit_state2> Vm::GetPit() const {
  return GetStruct<kvm_pit_state2>(fd_.get(), KVM_GET_PIT2, "KVM_GET_PIT2");
}

absl::Status Vm::SetPit(const kvm_pit_state2& pit) {
  kvm_pit_state2 p = pit;
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_SET_PIT2, &p);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Vcpu>> Vm::CreateVcpu(uint32_t id) {
  int fd = Ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  if (fd < 0) {
    return absl::ErrnoToStatus(errno,
                               absl::StrCat("KVM_CREATE_VCPU ", id, " failed"));
  }
  UniqueFd vcpu_fd(fd);
  auto run = MappedRegion::MapShared(vcpu_fd.get(), vcpu_mmap_size_,
                                     PROT_READ | PROT_WRITE);
  if (!run.ok()) return run.status();
  std::unique_ptr<Vcpu> vcpu(
      new Vcpu(id, std::move(vcpu_fd), std::move(*run)));
  int xsave2 = kvm_->CheckExtension(KVM_CAP_XSAVE2);
  if (xsave2 > static_cast<int>(sizeof(abi::Xsave))) {
    vcpu->xsave2_ = true;
    vcpu->xsave_size_ = xsave2;
  }
  return vcpu;
}

absl::StatusOr<VcpuExit> Vcpu::Run() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) < 0) {
    if (errno == EINTR || errno == EAGAIN) return VcpuExit(Interrupted{});
    return IoctlError("KVM_RUN");
  }
  return DecodeExit();
}

absl::StatusOr<VcpuExit> Vcpu::DecodeExit() {
  kvm_run* r = run();
  uint8_t* page = reinterpret_cast<uint8_t*>(r);
  switch (r->exit_reason) {
    case KVM_EXIT_IO: {
      // The data lives in the run page; bound it before building a span.
      uint64_t len = uint64_t{r->io.size} * r->io.count;
      if (r->io.data_offset + len > run_mapping_.size() || len == 0) {
        return absl::InternalError("KVM_EXIT_IO data outside the run page");
      }
      if (r->io.count != 1) {
        // String I/O (rep ins/outs) is not supported by kindling's devices.
        return VcpuExit(EntryFailure{absl::StrFormat(
            "string port I/O at 0x%x (count %u) is not supported", r->io.port,
            r->io.count)});
      }
      uint8_t* data = page + r->io.data_offset;
      if (r->io.direction == KVM_EXIT_IO_IN) {
        return VcpuExit(IoIn{r->io.port, std::span<uint8_t>(data, len)});
      }
      return VcpuExit(IoOut{r->io.port, std::span<const uint8_t>(data, len)});
    }
    case KVM_EXIT_MMIO: {
      uint32_t len = std::min<uint32_t>(r->mmio.len, sizeof(r->mmio.data));
      if (r->mmio.is_write) {
        return VcpuExit(MmioWrite{r->mmio.phys_addr,
                                  std::span<const uint8_t>(r->mmio.data, len)});
      }
      return VcpuExit(
          MmioRead{r->mmio.phys_addr, std::span<uint8_t>(r->mmio.data, len)});
    }
    case KVM_EXIT_HLT:
      return VcpuExit(Halt{});
    case KVM_EXIT_SHUTDOWN:
      return VcpuExit(Shutdown{});
    case KVM_EXIT_SYSTEM_EVENT:
      return VcpuExit(SystemEvent{r->system_event.type});
    case KVM_EXIT_INTR:
      return VcpuExit(Interrupted{});
    case KVM_EXIT_IOAPIC_EOI:
      return VcpuExit(IoapicEoi{r->eoi.vector});
    case KVM_EXIT_FAIL_ENTRY:
      return VcpuExit(EntryFailure{absl::StrFormat(
          "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason 0x%x",
          r->fail_entry.hardware_entry_failure_reason)});
    case KVM_EXIT_INTERNAL_ERROR:
      return VcpuExit(EntryFailure{absl::StrFormat(
          "KVM_EXIT_INTERNAL_ERROR: suberror %u (1 = instruction emulation "
          "failed)",
          r->internal.suberror)});
    default:
      return VcpuExit(EntryFailure{
          absl::StrCat("unhandled KVM exit reason ", r->exit_reason)});
  }
}

void Vcpu::SetImmediateExit(bool on) {
  __atomic_store_n(&run()->immediate_exit, on ? 1 : 0, __ATOMIC_SEQ_CST);
}

#define VCPU_GET_SET(Type, Name, GetReq, SetReq)                    \
  absl::StatusOr<Type> Vcpu::Get##Name() const {                    \
    return GetStruct<Type>(fd_.get(), GetReq, #GetReq);             \
  }                                                                 \
  absl::Status Vcpu::Set##Name(const Type& value) {                 \
    Type copy = value;                                              \
    KVM_IOCTL_OR_RETURN(fd_.get(), SetReq, &copy);                  \
    return absl::OkStatus();                                        \
  }

VCPU_GET_SET(kvm_regs, Regs, KVM_GET_REGS, KVM_SET_REGS)
VCPU_GET_SET(kvm_sregs, Sregs, KVM_GET_SREGS, KVM_SET_SREGS)
VCPU_GET_SET(kvm_fpu, Fpu, KVM_GET_FPU, KVM_SET_FPU)
VCPU_GET_SET(kvm_xcrs, Xcrs, KVM_GET_XCRS, KVM_SET_XCRS)
VCPU_GET_SET(kvm_debugregs, DebugRegs, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS)
VCPU_GET_SET(kvm_lapic_state, Lapic, KVM_GET_LAPIC, KVM_SET_LAPIC)
VCPU_GET_SET(kvm_vcpu_events, VcpuEvents, KVM_GET_VCPU_EVENTS,
             KVM_SET_VCPU_EVENTS)
VCPU_GET_SET(kvm_mp_state, MpState, KVM_GET_MP_STATE, KVM_SET_MP_STATE)
#undef VCPU_GET_SET

absl::StatusOr<std::vector<uint8_t>> Vcpu::GetXsave() const {
  std::vector<uint8_t> buf(std::max(xsave_size_, sizeof(abi::Xsave)));
  unsigned long req = xsave2_ ? abi::kGetXsave2 : abi::kGetXsave;
  if (Ioctl(fd_.get(), req, buf.data()) < 0) {
    return IoctlError(xsave2_ ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE");
  }
  return buf;
}

absl::Status Vcpu::SetXsave(std::span<const uint8_t> xsave) {
  std::vector<uint8_t> buf(std::max(xsave_size_, sizeof(abi::Xsave)));
  if (xsave.size() > buf.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "XSAVE state of ", xsave.size(), " bytes is larger than this host's ",
        buf.size()));
  }
  std::memcpy(buf.data(), xsave.data(), xsave.size());
  if (Ioctl(fd_.get(), abi::kSetXsave, buf.data()) < 0) {
    return IoctlError("KVM_SET_XSAVE");
  }
  return absl::OkStatus();
}

absl::Status Vcpu::SetCpuid(std::span<const kvm_cpuid_entry2> entries) {
  abi::FlexArray<abi::Cpuid2Header, kvm_cpuid_entry2> cpuid(entries);
  cpuid.header()->nent = entries.size();
  if (Ioctl(fd_.get(), abi::kSetCpuid2, cpuid.header()) < 0) {
    return IoctlError("KVM_SET_CPUID2");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> Vcpu::GetCpuid() const {
  abi::FlexArray<abi::Cpuid2Header, kvm_cpuid_entry2> cpuid(kMaxCpuidEntries);
  cpuid.header()->nent = kMaxCpuidEntries;
  if (Ioctl(fd_.get(), abi::kGetCpuid2, cpuid.header()) < 0) {
    return IoctlError("KVM_GET_CPUID2");
  }
  return cpuid.Take(cpuid.header()->nent);
}

absl::StatusOr<std::vector<kvm_msr_entry>> Vcpu::GetMsrs(
    std::span<const uint32_t> indices) const {
  abi::FlexArray<abi::MsrsHeader, kvm_msr_entry> msrs(indices.size());
  msrs.header()->nmsrs = indices.size();
  for (size_t i = 0; i < indices.size(); ++i) msrs.entries()[i].index = indices[i];
  int n = Ioctl(fd_.get(), abi::kGetMsrs, msrs.header());
  if (n < 0) return IoctlError("KVM_GET_MSRS");
  // KVM stops at the first MSR it cannot read; read the rest one by one.
  std::vector<kvm_msr_entry> out = msrs.Take(n);
  for (size_t i = n + 1; i < indices.size(); ++i) {
    auto one = GetMsrs(std::span<const uint32_t>(&indices[i], 1));
    if (one.ok() && !one->empty()) out.push_back((*one)[0]);
  }
  return out;
}

absl::StatusOr<uint32_t> Vcpu::GetTscKhz() const {
  int khz = Ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0);
  if (khz < 0) return IoctlError("KVM_GET_TSC_KHZ");
  return static_cast<uint32_t>(khz);
}

absl::Status Vcpu::SetMsrs(std::span<const kvm_msr_entry> entries) {
  abi::FlexArray<abi::MsrsHeader, kvm_msr_entry> msrs(entries);
  msrs.header()->nmsrs = entries.size();
  int n = Ioctl(fd_.get(), abi::kSetMsrs, msrs.header());
  if (n < 0) return IoctlError("KVM_SET_MSRS");
  if (static_cast<size_t>(n) != entries.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KVM_SET_MSRS refused MSR 0x%x (set %d of %u)", entries[n].index, n,
        entries.size()));
  }
  return absl::OkStatus();
}

absl::Status Vcpu::KvmclockCtrl() {
  KVM_IOCTL_OR_RETURN(fd_.get(), KVM_KVMCLOCK_CTRL, 0);
  return absl::OkStatus();
}

absl::StatusOr<vm_memory::UniqueFd> Vcpu::GetStatsFd() const {
  int fd = Ioctl(fd_.get(), KVM_GET_STATS_FD, 0);
  if (fd < 0) return IoctlError("KVM_GET_STATS_FD");
  return UniqueFd(fd);
}

}  // namespace vcpu
