// virtio-gpu state <-> VirtioGpu: a round trip keeps every pixel, and a
// hostile message is refused before it allocates, naming the field.
#include "migration/gpu_codec.h"

#include <linux/virtio_gpu.h>

#include <catch2/catch.hpp>
#include <functional>

using namespace migration;

namespace {

virtio::GpuState TwoResources() {
  virtio::GpuState s;
  virtio::GpuResourceState a{1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 64, 48, {}, true, {}};
  a.pixels.resize(64 * 48 * 4);
  for (size_t i = 0; i < a.pixels.size(); ++i) a.pixels[i] = static_cast<uint8_t>(i * 7 / 5);
  a.backing = {{0x100000, 6000}, {0x200000, 64 * 48 * 4 - 6000}};
  virtio::GpuResourceState b{9, VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, 1, 1, {1, 2, 3, 4}, false, {}};
  s.resources = {a, b};
  s.scanout_resource = 1;
  s.scanout_width = 64;
  s.scanout_height = 48;
  s.cursor_resource = 9;
  s.cursor_x = 5;
  s.cursor_hot_y = 2;
  return s;
}

}  // namespace

TEST_CASE("gpu codec: a round trip keeps resources, pixels, backing, scanout and cursor") {
  virtio::GpuState s = TwoResources();
  auto m = EncodeGpu(s);
  REQUIRE(m.ok());
  // A pattern with runs compresses.
  REQUIRE(m->resources(0).pixels_zstd().size() < s.resources[0].pixels.size());
  auto back = DecodeGpu(*m, 1 << 20);
  INFO(back.status().message());
  REQUIRE(back.ok());
  REQUIRE(back->resources.size() == 2);
  REQUIRE(back->resources[0].pixels == s.resources[0].pixels);
  REQUIRE(back->resources[0].backing == s.resources[0].backing);
  REQUIRE(back->resources[1].pixels == s.resources[1].pixels);
  REQUIRE_FALSE(back->resources[1].has_backing);
  REQUIRE(back->scanout_resource == 1);
  REQUIRE(back->scanout_height == 48);
  REQUIRE(back->cursor_resource == 9);
  REQUIRE(back->cursor_x == 5);
  REQUIRE(back->cursor_hot_y == 2);
}

TEST_CASE("gpu codec: hostile messages are refused by name, before any large allocation") {
  const v1::VirtioGpu good = *EncodeGpu(TwoResources());
  auto refused = [&](const std::function<void(v1::VirtioGpu&)>& spoil, const std::string& why,
                     uint64_t limit = 1 << 20) {
    v1::VirtioGpu m = good;
    spoil(m);
    auto s = DecodeGpu(m, limit);
    INFO(why << ": " << s.status().message());
    REQUIRE(s.status().code() == absl::StatusCode::kInvalidArgument);
    REQUIRE(std::string(s.status().message()).find(why) != std::string::npos);
  };
  refused([](v1::VirtioGpu& m) { m.mutable_resources(0)->set_width(0); }, "size 0x48");
  refused([](v1::VirtioGpu& m) { m.mutable_resources(0)->set_height(70000); }, "size 64x70000");
  // A resource the limit cannot hold is refused before its pixels are
  // unpacked (16384 x 16384 would be 1 GiB).
  refused(
      [](v1::VirtioGpu& m) {
        m.mutable_resources(0)->set_width(16384);
        m.mutable_resources(0)->set_height(16384);
      },
      "more pixels than the device's memory limit");
  refused([](v1::VirtioGpu&) {}, "more pixels than the device's memory limit", 1000);
  refused([](v1::VirtioGpu& m) { m.mutable_resources(0)->set_pixels_zstd("garbage"); },
          "not one zstd frame of 12288 bytes");
  refused([](v1::VirtioGpu& m) { m.mutable_resources(0)->set_width(32); },
          "not one zstd frame of 6144 bytes");
  refused(
      [](v1::VirtioGpu& m) {
        std::string z = m.resources(0).pixels_zstd();
        z.resize(z.size() - 3);
        m.mutable_resources(0)->set_pixels_zstd(z);
      },
      "pixels_zstd");
  refused(
      [](v1::VirtioGpu& m) {
        for (int i = 0; i < 16385; ++i) m.mutable_resources(0)->add_backing();
      },
      "backing entries");
}
