// libFuzzer: a snapshot's state.pb as an attacker writes it. Parsing,
// validation and every decoder must fail cleanly, never crash; decoded
// virtio states are loaded into real transports (an rng device over 1 MiB
// of guest RAM), so the queue and transport checks are fuzzed too, and a
// GPU's resources into a Gpu2d; a diff snapshot's memory manifest is
// applied to that RAM.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "migration/gpu_codec.h"
#include "migration/snapshot.h"
#include "migration/state_codec.h"
#include "migration/virtio_codec.h"
#include "virtio/rng.h"

namespace {

struct Env {
  Env() : loop("fuzz") {
    vm_memory::RegionSpec spec{vm_memory::GuestAddress(0), 1 << 20};
    mem = std::move(*vm_memory::GuestMemory::Create({&spec, 1}));
  }
  std::unique_ptr<vm_memory::GuestMemory> mem;
  virtio::EventLoop loop;
};

Env& TheEnv() {
  static Env* env = new Env();
  return *env;
}

// A diff's manifest (present ranges, checksums) applied to the 1 MiB of
// guest RAM from a 1 MiB file of zeros.
void ApplyDiff(const kindling::migration::v1::MemoryManifest& m) {
  static int fd = [] {
    int f = ::memfd_create("fuzz-diff", MFD_CLOEXEC);
    if (f >= 0 && ::ftruncate(f, 1 << 20) != 0) return -1;
    return f;
  }();
  if (fd < 0 || m.file_size() != (1u << 20)) return;
  (void)migration::ApplyDiffMemoryFile(fd, m, *TheEnv().mem);
}

void LoadVirtio(const kindling::migration::v1::Virtio& v) {
  Env* env = &TheEnv();
  if (v.has_mmio()) {
    auto s = migration::DecodeMmio(v.mmio());
    if (!s.ok()) return;
    virtio::MmioTransport t(std::make_shared<virtio::Rng>(), *env->mem, env->loop, [] {});
    (void)t.RestoreMmioState(*s);
    t.KickAfterRestore();
    env->loop.RunSync([] {});
  }
  if (v.has_pci()) {
    auto s = migration::DecodePci(v.pci());
    if (!s.ok()) return;
    virtio::PciTransport t(std::make_shared<virtio::Rng>(), *env->mem, env->loop, {});
    (void)t.RestorePciState(*s);
    t.KickAfterRestore();
    env->loop.RunSync([] {});
  }
  (void)migration::DecodeBalloon(v.balloon());
  if (v.has_gpu()) {
    auto g = migration::DecodeGpu(v.gpu(), 4 << 20);
    if (!g.ok()) return;
    virtio::Gpu2d gpu(*env->mem, virtio::GpuLimits{.max_host_bytes = 4 << 20});
    if (gpu.RestoreState(*std::move(g)).ok()) (void)gpu.Screenshot(0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto s = migration::ParseSnapshot(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (!s.ok()) return 0;
  for (const auto& v : s->vcpus()) {
    (void)migration::DecodeVcpu(v);
    (void)migration::DecodeCpuid(v);
  }
  (void)migration::DecodeClock(s->kvm_clock());
  if (s->has_base()) ApplyDiff(s->memory());
  if (s->irqchip().has_ioapic()) (void)migration::DecodeIoapic(s->irqchip().ioapic());
  if (s->irqchip().has_kernel()) (void)migration::DecodeKernelIrqchip(s->irqchip().kernel());
  for (const auto& d : s->devices()) {
    if (d.has_serial()) (void)migration::DecodeSerial(d.serial());
    if (d.has_virtio()) LoadVirtio(d.virtio());
  }
  return 0;
}
