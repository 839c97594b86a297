// virtio-gpu end to end: the virtio_gpu test guest draws its pattern
// through kindling's device (virtio-mmio and virtio-pci), and
// MicroVm::Screenshot shows exactly that picture, also as a PNG. A VM
// without a GPU, or whose guest has not set a scanout, says so; a GPU
// VM's snapshot restores with its picture.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kindling/test_skip.h"
#include "launcher/microvm.h"
#include "tests/e2e/console.h"
#include "virtio/gpu_png.h"

using kindling::MicroVm;
using kindling::VmConfig;
using kindling::testing::Console;
using vcpu::VcpuRunner;

namespace {

constexpr uint32_t kWidth = 320, kHeight = 240;

VmConfig GpuConfig(kindling::VirtioTransport transport, int hold_ms) {
  VmConfig c;
  const char* elf = std::getenv("KINDLING_GPU_ELF");
  c.kernel = elf ? elf : "tests/guests/virtio_gpu.elf";
  c.cmdline = "gpu.hold_ms=" + std::to_string(hold_ms);
  c.memory_mib = 64;
  c.virtio.transport = transport;
  c.virtio.gpu = kindling::GpuConfig{kWidth, kHeight, 16};
  return c;
}

// The first pixel that is not virtio_gpu's pattern, or "" if none.
std::string Mismatch(const virtio::GpuImage& img) {
  if (img.width != kWidth || img.height != kHeight || img.rgb.size() != kWidth * kHeight * 3) {
    return absl::StrCat("a ", img.width, "x", img.height, " image");
  }
  for (uint32_t y = 0; y < kHeight; ++y) {
    for (uint32_t x = 0; x < kWidth; ++x) {
      const uint8_t* p = &img.rgb[(y * kWidth + x) * 3];
      if (p[0] != static_cast<uint8_t>(x * 4) || p[1] != static_cast<uint8_t>(y * 4) ||
          p[2] != static_cast<uint8_t>(x ^ y)) {
        return absl::StrCat("pixel ", x, ",", y, " is ", p[0], ",", p[1], ",", p[2]);
      }
    }
  }
  return "";
}

void DrawAndLook(kindling::VirtioTransport transport) {
  Console console;
  VmConfig c = GpuConfig(transport, 3000);
  c.console_output = console.Sink();
  auto vm = MicroVm::Create(c);
  INFO(vm.status().message());
  REQUIRE(vm.ok());
  // Before the guest's driver has run: nothing to show yet.
  REQUIRE((*vm)->Screenshot().status().code() == absl::StatusCode::kFailedPrecondition);
  VcpuRunner::Outcome out;
  std::thread runner([&] { out = (*vm)->Run(); });
  bool ok = console.WaitFor("virtio-gpu: ok");
  absl::StatusOr<virtio::GpuImage> shot = (*vm)->Screenshot();
  if (!ok) (*vm)->Stop({VcpuRunner::StopReason::kRequested, 0, "test over"});
  runner.join();
  INFO(console.Get());
  REQUIRE(ok);
  REQUIRE(out.reason == VcpuRunner::StopReason::kGuestExit);
  REQUIRE(out.exit_code == 0);
  INFO(shot.status().message());
  REQUIRE(shot.ok());
  REQUIRE(Mismatch(*shot) == "");
  auto png = virtio::EncodePng(*shot);
  REQUIRE(png.ok());
  auto back = virtio::DecodePng(*png);
  REQUIRE(back.ok());
  REQUIRE(Mismatch(*back) == "");
  std::printf("virtio-gpu (%s): %ux%u screenshot, %zu bytes of PNG\n",
              transport == kindling::VirtioTransport::kPci ? "pci" : "mmio", shot->width,
              shot->height, png->size());
}

}  // namespace

TEST_CASE("virtio-gpu over virtio-mmio: the screenshot is the guest's picture") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  DrawAndLook(kindling::VirtioTransport::kMmio);
}

TEST_CASE("virtio-gpu over virtio-pci: the screenshot is the guest's picture") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  DrawAndLook(kindling::VirtioTransport::kPci);
}

TEST_CASE("virtio-gpu: a VM without one says so; a GPU VM's snapshot keeps its picture") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  VmConfig plain = GpuConfig(kindling::VirtioTransport::kMmio, 0);
  plain.virtio.gpu.reset();
  plain.console_output = [](uint8_t) {};
  auto vm = MicroVm::Create(plain);
  REQUIRE(vm.ok());
  absl::Status s = (*vm)->Screenshot().status();
  REQUIRE(s.code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(std::string(s.message()).find("--gpu") != std::string::npos);

  Console console;
  VmConfig c = GpuConfig(kindling::VirtioTransport::kMmio, 600000);
  c.console_output = console.Sink();
  auto gpu_vm = MicroVm::Create(c);
  REQUIRE(gpu_vm.ok());
  VcpuRunner::Outcome out;
  std::thread runner([&] { out = (*gpu_vm)->Run(); });
  bool drawn = console.WaitFor("virtio-gpu: ok");
  (*gpu_vm)->Pause();
  char dir[] = "/tmp/gpu_snapXXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  absl::Status snap = (*gpu_vm)->SaveSnapshot(dir);
  (*gpu_vm)->Resume();
  (*gpu_vm)->Stop({VcpuRunner::StopReason::kRequested, 0, "test over"});
  runner.join();
  INFO(console.Get());
  REQUIRE(drawn);
  INFO(snap.message());
  REQUIRE(snap.ok());
  // Restored: the device holds the guest's resources again before any
  // vCPU runs, and the screen shows what it showed.
  VmConfig host;
  host.console_output = [](uint8_t) {};
  auto back = MicroVm::Restore(host, dir);
  std::filesystem::remove_all(dir);
  INFO(back.status().message());
  REQUIRE(back.ok());
  absl::StatusOr<virtio::GpuImage> shot = (*back)->Screenshot();
  INFO(shot.status().message());
  REQUIRE(shot.ok());
  REQUIRE(Mismatch(*shot) == "");
}

TEST_CASE("virtio-gpu virgl: the guest's 3D clear reads back; snapshots refuse, naming virgl") {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    KINDLING_SKIP("/dev/kvm is not available on this host");
  }
  // kindling-gpu from the runfiles unless the caller (nested_test) says.
  ::setenv("KINDLING_GPU_RENDERER", "libs/virtio/kindling-gpu", /*overwrite=*/0);
  ::setenv("LIBGL_ALWAYS_SOFTWARE", "1", 0);
  Console console;
  VmConfig c = GpuConfig(kindling::VirtioTransport::kPci, 600000);
  c.virtio.gpu->virgl = true;
  c.console_output = console.Sink();
  auto vm = MicroVm::Create(c);
  INFO(vm.status().message());
  REQUIRE(vm.ok());
  VcpuRunner::Outcome out;
  std::thread runner([&] { out = (*vm)->Run(); });
  bool ok = console.WaitFor("virtio-gpu: ok");
  absl::StatusOr<virtio::GpuImage> shot = (*vm)->Screenshot();
  (*vm)->Pause();
  char dir[] = "/tmp/gpu_virgl_snapXXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  absl::Status snap = (*vm)->SaveSnapshot(dir);
  (*vm)->Resume();
  std::filesystem::remove_all(dir);
  (*vm)->Stop({VcpuRunner::StopReason::kRequested, 0, "test over"});
  runner.join();
  std::string log = console.Get();
  INFO(log);
  REQUIRE(ok);
  for (const char* line : {"virtio-gpu: 1 scanouts, 2 capsets", "virtio-gpu: capset 2 read",
                           "virtio-gpu: 3d clear read back ok (64x32)",
                           "virtio-gpu: submit to context 9 -> 0x1204",
                           "virtio-gpu: 3d box past the resource -> 0x1205"}) {
    INFO(line);
    REQUIRE(log.find(line) != std::string::npos);
  }
  // The scanout holds the 2D pattern (the guest shows resource 1).
  REQUIRE(shot.ok());
  REQUIRE(Mismatch(*shot) == "");
  INFO(snap.message());
  REQUIRE(snap.code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(std::string(snap.message()).find("virgl") != std::string::npos);
}
