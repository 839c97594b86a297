// The host side of linux_gpu_test: boots Debian's stock kernel with the
// initramfs linux_gpu_init.sh made, over virtio-pci with a virtio-gpu of
// 640x480, waits until the guest says its DRM framebuffer has text on it,
// and looks at the scanout: the picture must be the mode the device
// offered, with the console's text lit on a dark screen.
//
//   linux_gpu_check KERNEL INITRD
// Exit 0 when all holds; prints `linux-gpu-check: ...` lines either way.
#include <cstdio>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "launcher/microvm.h"
#include "tests/e2e/console.h"

namespace {

constexpr uint32_t kWidth = 640, kHeight = 480;

int Fail(const std::string& why, kindling::testing::Console& console) {
  std::printf("--- guest console\n%s\n", console.Get().c_str());
  std::printf("linux-gpu-check: FAIL %s\n", why.c_str());
  return 1;
}

// Pixels brighter than the dark background (fbcon's text).
uint64_t LitPixels(const virtio::GpuImage& img) {
  uint64_t lit = 0;
  for (size_t i = 0; i + 2 < img.rgb.size(); i += 3) {
    if (img.rgb[i] > 0x40 || img.rgb[i + 1] > 0x40 || img.rgb[i + 2] > 0x40) ++lit;
  }
  return lit;
}

// The scanout once the guest's text reached it (its flushes are lazy).
absl::StatusOr<virtio::GpuImage> ShotWithText(kindling::MicroVm& vm) {
  absl::StatusOr<virtio::GpuImage> shot = absl::UnavailableError("no screenshot yet");
  for (int i = 0; i < 100; ++i) {
    shot = vm.Screenshot(0);
    if (shot.ok() && LitPixels(*shot) >= 2000) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return shot;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: linux_gpu_check KERNEL INITRD\n");
    return 2;
  }
  kindling::testing::Console console;
  kindling::VmConfig c;
  c.kernel = argv[1];
  c.initrd = argv[2];
  c.cmdline = "console=ttyS0 quiet panic=-1";
  c.memory_mib = 256;
  c.virtio.transport = kindling::VirtioTransport::kPci;
  c.virtio.gpu = kindling::GpuConfig{kWidth, kHeight, 16};
  c.console_output = console.Sink();
  auto vm = kindling::MicroVm::Create(c);
  if (!vm.ok()) return Fail(absl::StrCat("MicroVm::Create: ", vm.status().message()), console);
  std::thread runner([&] { (void)(*vm)->Run(); });
  bool drawn = console.WaitFor("linux-gpu: drawn", std::chrono::seconds(400));
  absl::StatusOr<virtio::GpuImage> shot =
      drawn ? ShotWithText(**vm) : absl::UnavailableError("the guest drew nothing");
  (*vm)->Stop({vcpu::VcpuRunner::StopReason::kRequested, 0, "test over"});
  runner.join();
  std::printf("%s", console.Get().c_str());
  if (!drawn) return Fail("the guest did not say `linux-gpu: drawn`", console);
  if (!shot.ok()) return Fail(absl::StrCat("screenshot: ", shot.status().message()), console);
  uint64_t lit = LitPixels(*shot);
  std::printf("linux-gpu-check: scanout %ux%u, %llu lit pixels\n", shot->width, shot->height,
              static_cast<unsigned long long>(lit));
  if (shot->width != kWidth || shot->height != kHeight) {
    return Fail(absl::StrCat("the scanout is ", shot->width, "x", shot->height, ", not the ",
                             kWidth, "x", kHeight, " the device offered"), console);
  }
  // Ten lines of ~70 characters in an 8x16 font light far more than this;
  // a black or never-flushed screen lights none, a garbled one most.
  if (lit < 2000 || lit > uint64_t{kWidth} * kHeight / 2) {
    return Fail(absl::StrCat(lit, " lit pixels: not the console's text"), console);
  }
  std::printf("linux-gpu-check: ok\n");
  return 0;
}
