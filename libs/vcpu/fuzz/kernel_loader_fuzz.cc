// Fuzzes the kernel loaders (ELF/PVH note parsing, bzImage header) and the
// boot-info writers against a small guest memory.
#include <cstdint>
#include <memory>
#include <span>

#include "vcpu/boot/boot_setup.h"
#include "vcpu/boot/kernel_loader.h"
#include "vm-memory/layout.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<vm_memory::GuestMemory> mem =
      std::move(*vm_memory::GuestMemory::Create(vm_memory::X86RamLayout(8 << 20)));
  std::span<const uint8_t> image(data, size);
  auto k = vcpu::boot::LoadKernel(*mem, image);
  if (!k.ok()) return 0;
  vcpu::boot::BootConfig cfg;
  cfg.cmdline = "console=ttyS0";
  if (!vcpu::boot::WriteBootInfo(*mem, *k, cfg).ok()) return 0;
  kvm_sregs sregs = {};
  (void)vcpu::boot::SetupBootCpu(*mem, *k, sregs);
  return 0;
}
