// tiny_vmm: a VMM built from kindling's libraries alone, no launcher code.
// It boots an x86 guest (PVH ELF or bzImage) with 64 MiB of RAM, a serial
// console on stdout and one virtio-blk disk over virtio-mmio, and exits
// with the byte the guest writes to the debug-exit port (0xf4).
//
//   tiny_vmm GUEST.elf DISK.img
//
// Each library does one part: vm-memory the RAM, vcpu::boot the image and
// boot structures, vcpu the KVM handles, vCPU defaults and run loop,
// vcpu:legacy_devices the serial port and debug-exit, block the disk image,
// virtio the device, its transport and the KVM wiring.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "block/image.h"
#include "kindling/status_macros.h"
#include "vcpu/boot/boot_setup.h"
#include "vcpu/boot/kernel_loader.h"
#include "vcpu/bus.h"
#include "vcpu/cpuid.h"
#include "vcpu/devices/legacy.h"
#include "vcpu/devices/serial.h"
#include "vcpu/kvm.h"
#include "vcpu/vcpu_runner.h"
#include "vcpu/x86_defaults.h"
#include "virtio/block.h"
#include "virtio/event_loop.h"
#include "virtio/kvm/wiring.h"
#include "virtio/mmio.h"
#include "vm-memory/guest_memory.h"
#include "vm-memory/layout.h"

namespace {

constexpr uint64_t kRamBytes = 64ULL << 20;
constexpr uint64_t kMaxImageBytes = 64ULL << 20;
constexpr uint64_t kDiskBase = 0xd0000000;  // virtio-mmio window
constexpr uint32_t kDiskGsi = 5;
constexpr uint32_t kSerialGsi = 4;

// Everything the VM holds, destroyed in reverse: the runner (vCPU threads)
// first, the device loop before the transport it serves, KVM last.
struct TinyVm {
  std::unique_ptr<vm_memory::GuestMemory> memory;
  vcpu::boot::LoadedKernel kernel;
  std::unique_ptr<vcpu::Kvm> kvm;
  std::unique_ptr<vcpu::Vm> vm;
  vcpu::Bus pio, mmio;
  std::vector<vm_memory::UniqueFd> fds;  // irqfd and ioeventfds
  std::unique_ptr<virtio::EventLoop> loop;
  std::vector<std::unique_ptr<vcpu::Vcpu>> vcpus;
  std::unique_ptr<vcpu::VcpuRunner> runner;

  ~TinyVm() {
    runner.reset();
    if (loop) loop->Stop();
    pio.Clear();
    mmio.Clear();
  }
};

void WriteStdout(uint8_t b) {
  while (::write(STDOUT_FILENO, &b, 1) < 0 && errno == EINTR) {
  }
}

// RAM, the guest image, and the command line telling the guest where the
// disk is (Linux's virtio_mmio.device= syntax).
absl::Status LoadGuest(TinyVm& t, const std::string& path) {
  namespace boot = vcpu::boot;
  ASSIGN_OR_RETURN(t.memory, vm_memory::GuestMemory::Create(vm_memory::X86RamLayout(kRamBytes)));
  ASSIGN_OR_RETURN(std::vector<uint8_t> image, boot::ReadFileCapped(path, kMaxImageBytes));
  ASSIGN_OR_RETURN(t.kernel, boot::LoadKernel(*t.memory, image));
  boot::BootConfig config;
  config.cmdline = absl::StrFormat("console=ttyS0 virtio_mmio.device=4K@%#x:%d", kDiskBase,
                                   kDiskGsi);
  return boot::WriteBootInfo(*t.memory, t.kernel, config);
}

// A VM with the in-kernel irqchip and the guest's RAM mapped.
absl::Status CreateVm(TinyVm& t) {
  ASSIGN_OR_RETURN(t.kvm, vcpu::Kvm::Open());
  RETURN_IF_ERROR(t.kvm->RequireCapabilities(vcpu::RequiredCapabilities()));
  ASSIGN_OR_RETURN(t.vm, t.kvm->CreateVm());
  RETURN_IF_ERROR(t.vm->SetTssAddress(0xfffbd000));
  RETURN_IF_ERROR(t.vm->SetIdentityMapAddress(0xfffbc000));
  RETURN_IF_ERROR(t.vm->CreateIrqchip(vcpu::IrqchipMode::kFull));
  uint32_t slot = 0;
  for (const vm_memory::GuestRegion* r : t.memory->regions()) {
    RETURN_IF_ERROR(t.vm->SetUserMemoryRegion(slot++, *r));
  }
  return absl::OkStatus();
}

// COM1 on stdout, and the debug-exit port that ends the run.
absl::Status AddLegacyDevices(TinyVm& t) {
  vcpu::Vm* vm = t.vm.get();
  auto serial = std::make_shared<vcpu::Serial>(WriteStdout,
                                               [vm] { (void)vm->PulseIrq(kSerialGsi); });
  RETURN_IF_ERROR(t.pio.Insert(serial, 0x3f8, 8, "serial"));
  auto exit_port = std::make_shared<vcpu::DebugExit>([&t](uint8_t code) {
    t.runner->Stop({vcpu::VcpuRunner::StopReason::kGuestExit, code, "debug-exit"});
  });
  return t.pio.Insert(exit_port, 0xf4, 1, "debug-exit");
}

// virtio-blk on `disk`: interrupts through an irqfd, notifications through
// ioeventfds to the device's own event loop.
absl::Status AddDisk(TinyVm& t, const std::string& disk) {
  ASSIGN_OR_RETURN(std::unique_ptr<block::Image> image, block::OpenImage(disk, {.format = "raw"}));
  auto device = std::make_shared<virtio::Block>(std::move(image),
                                                virtio::BlockOptions{.serial = "tiny0"});
  t.loop = std::make_unique<virtio::EventLoop>("virtio-blk");
  ASSIGN_OR_RETURN(virtio::IrqLine irq, virtio::IrqfdLine(*t.vm, kDiskGsi));
  t.fds.push_back(std::move(irq.fd));
  auto transport = std::make_shared<virtio::MmioTransport>(device, *t.memory, *t.loop,
                                                           std::move(irq.raise));
  RETURN_IF_ERROR(t.mmio.Insert(transport, kDiskBase, virtio::kMmioSize, "virtio-blk"));
  ASSIGN_OR_RETURN(auto notify, virtio::WireMmioNotify(*t.vm, *t.loop, transport, kDiskBase));
  for (auto& fd : notify) t.fds.push_back(std::move(fd));
  return absl::OkStatus();
}

// One vCPU with the host's CPUID, PC firmware defaults and the boot
// registers the image asks for.
absl::Status AddVcpu(TinyVm& t) {
  ASSIGN_OR_RETURN(vcpu::CpuidTable cpuid, t.kvm->GetSupportedCpuid());
  vcpu::SetTopology(cpuid, 0, 1);
  ASSIGN_OR_RETURN(std::unique_ptr<vcpu::Vcpu> v, t.vm->CreateVcpu(0));
  RETURN_IF_ERROR(v->SetCpuid(cpuid));
  RETURN_IF_ERROR(vcpu::SetPcDefaults(*v));
  ASSIGN_OR_RETURN(kvm_sregs sregs, v->GetSregs());
  ASSIGN_OR_RETURN(vcpu::boot::BootCpuState boot,
                   vcpu::boot::SetupBootCpu(*t.memory, t.kernel, sregs));
  RETURN_IF_ERROR(v->SetSregs(boot.sregs));
  RETURN_IF_ERROR(v->SetRegs(boot.regs));
  t.vcpus.push_back(std::move(v));
  t.runner = std::make_unique<vcpu::VcpuRunner>(t.vcpus, t.pio, t.mmio);
  return absl::OkStatus();
}

absl::StatusOr<int> Run(const std::string& guest, const std::string& disk) {
  TinyVm t;
  RETURN_IF_ERROR(LoadGuest(t, guest));
  RETURN_IF_ERROR(CreateVm(t));
  RETURN_IF_ERROR(AddLegacyDevices(t));
  RETURN_IF_ERROR(AddDisk(t, disk));
  RETURN_IF_ERROR(AddVcpu(t));
  RETURN_IF_ERROR(t.runner->Start());
  vcpu::VcpuRunner::Outcome out = t.runner->Wait();
  if (out.reason != vcpu::VcpuRunner::StopReason::kGuestExit) {
    return absl::InternalError(absl::StrCat("the guest stopped: ", out.detail));
  }
  return out.exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: tiny_vmm GUEST.elf DISK.img\n");
    return 2;
  }
  absl::StatusOr<int> code = Run(argv[1], argv[2]);
  if (!code.ok()) {
    std::fprintf(stderr, "tiny_vmm: %s\n", std::string(code.status().message()).c_str());
    return 1;
  }
  return *code;
}
