// virtio-gpu 2D: Gpu2d's commands with a pattern drawn in guest memory,
// every error response a hostile request should get, the EDID block, the
// device on a mock queue, and PNG screenshots.
#include "virtio/gpu.h"

#include <linux/virtio_gpu.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <type_traits>

#include "libs/virtio/src/test_env.h"
#include "virtio/gpu_png.h"

using namespace virtio;
using vm_memory::GuestAddress;

namespace {

template <typename T>
std::vector<uint8_t> Bytes(const T& cmd) {
  const auto* p = reinterpret_cast<const uint8_t*>(&cmd);
  return {p, p + sizeof(T)};
}

template <typename T>
T Cmd(uint32_t type) {
  T c{};
  if constexpr (std::is_same_v<T, virtio_gpu_ctrl_hdr>) {
    c.type = type;
  } else {
    c.hdr.type = type;
  }
  return c;
}

uint32_t RespType(const std::vector<uint8_t>& resp) {
  REQUIRE(resp.size() >= sizeof(virtio_gpu_ctrl_hdr));
  virtio_gpu_ctrl_hdr h;
  std::memcpy(&h, resp.data(), sizeof(h));
  return h.type;
}

// The test pattern: R, G and B of pixel (x, y).
uint8_t R(uint32_t x, uint32_t) { return static_cast<uint8_t>(x * 4); }
uint8_t G(uint32_t, uint32_t y) { return static_cast<uint8_t>(y * 4); }
uint8_t B(uint32_t x, uint32_t y) { return static_cast<uint8_t>(x ^ y); }

struct Fixture {
  static constexpr uint32_t kW = 64, kH = 48;
  static constexpr uint64_t kBacking = 0x100000;  // guest address of the pixels
  std::unique_ptr<vm_memory::GuestMemory> mem = test::MakeMemory();
  Gpu2d gpu{*mem, GpuLimits{.width = 800, .height = 600, .max_host_bytes = 1 << 20}};

  uint32_t Run(const std::vector<uint8_t>& req) { return RespType(gpu.Execute(req)); }

  uint32_t Create(uint32_t id, uint32_t w = kW, uint32_t h = kH,
                  uint32_t format = VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM) {
    auto c = Cmd<virtio_gpu_resource_create_2d>(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D);
    c.resource_id = id;
    c.format = format;
    c.width = w;
    c.height = h;
    return Run(Bytes(c));
  }
  // Backing in two entries, split mid-row, to cross an entry in a row.
  uint32_t Attach(uint32_t id, std::vector<virtio_gpu_mem_entry> entries = {}) {
    if (entries.empty()) {
      const uint32_t half = kW * kH * 2 + 100;
      entries = {{kBacking, half, 0}, {kBacking + half, kW * kH * 4 - half, 0}};
    }
    auto c = Cmd<virtio_gpu_resource_attach_backing>(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING);
    c.resource_id = id;
    c.nr_entries = entries.size();
    std::vector<uint8_t> req = Bytes(c);
    for (const auto& e : entries) {
      auto b = Bytes(e);
      req.insert(req.end(), b.begin(), b.end());
    }
    return Run(req);
  }
  void Draw(uint8_t bias = 0) {
    std::vector<uint8_t> px(kW * kH * 4);
    for (uint32_t y = 0; y < kH; ++y) {
      for (uint32_t x = 0; x < kW; ++x) {
        uint8_t* p = &px[(y * kW + x) * 4];  // B8G8R8X8: B, G, R, X in memory
        p[0] = B(x, y) + bias;
        p[1] = G(x, y) + bias;
        p[2] = R(x, y) + bias;
        p[3] = 0x77;
      }
    }
    REQUIRE(mem->Write(GuestAddress(kBacking), px).ok());
  }
  uint32_t Transfer(uint32_t id, virtio_gpu_rect r, uint64_t offset) {
    auto c = Cmd<virtio_gpu_transfer_to_host_2d>(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D);
    c.resource_id = id;
    c.r = r;
    c.offset = offset;
    return Run(Bytes(c));
  }
  uint32_t Scanout(uint32_t scanout, uint32_t id, virtio_gpu_rect r = {0, 0, kW, kH}) {
    auto c = Cmd<virtio_gpu_set_scanout>(VIRTIO_GPU_CMD_SET_SCANOUT);
    c.scanout_id = scanout;
    c.resource_id = id;
    c.r = r;
    return Run(Bytes(c));
  }
  uint32_t Flush(uint32_t id, virtio_gpu_rect r = {0, 0, kW, kH}) {
    auto c = Cmd<virtio_gpu_resource_flush>(VIRTIO_GPU_CMD_RESOURCE_FLUSH);
    c.resource_id = id;
    c.r = r;
    return Run(Bytes(c));
  }
  uint32_t Simple(uint32_t type, uint32_t id) {
    auto c = Cmd<virtio_gpu_resource_unref>(type);
    c.resource_id = id;
    return Run(Bytes(c));
  }
  // A resource with the pattern on scanout 0.
  void Show() {
    REQUIRE(Create(1) == VIRTIO_GPU_RESP_OK_NODATA);
    REQUIRE(Attach(1) == VIRTIO_GPU_RESP_OK_NODATA);
    Draw();
    REQUIRE(Transfer(1, {0, 0, kW, kH}, 0) == VIRTIO_GPU_RESP_OK_NODATA);
    REQUIRE(Scanout(0, 1) == VIRTIO_GPU_RESP_OK_NODATA);
    REQUIRE(Flush(1) == VIRTIO_GPU_RESP_OK_NODATA);
  }
};

void RequirePattern(const GpuImage& img, uint32_t w, uint32_t h) {
  REQUIRE(img.width == w);
  REQUIRE(img.height == h);
  for (uint32_t y = 0; y < h; ++y) {
    for (uint32_t x = 0; x < w; ++x) {
      const uint8_t* p = &img.rgb[(y * w + x) * 3];
      INFO("pixel " << x << "," << y);
      REQUIRE((p[0] == R(x, y) && p[1] == G(x, y) && p[2] == B(x, y)));
    }
  }
}

}  // namespace

TEST_CASE("virtio-gpu 2D: a drawn resource on the scanout is what the screenshot shows") {
  Fixture f;
  REQUIRE(f.gpu.Screenshot(0).status().code() == absl::StatusCode::kFailedPrecondition);
  f.Show();
  auto shot = f.gpu.Screenshot(0);
  REQUIRE(shot.ok());
  RequirePattern(*shot, Fixture::kW, Fixture::kH);
  REQUIRE(f.gpu.stats().transfers == 1);
  REQUIRE(f.gpu.stats().flushes == 1);
  REQUIRE(f.gpu.stats().host_bytes == Fixture::kW * Fixture::kH * 4);
  REQUIRE(f.gpu.Screenshot(1).status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("virtio-gpu 2D: a partial transfer changes its box only") {
  Fixture f;
  f.Show();
  f.Draw(/*bias=*/1);  // the guest draws again; only the box goes over
  const virtio_gpu_rect box{8, 4, 16, 8};
  const uint64_t offset = (4 * Fixture::kW + 8) * 4;  // the box's first pixel
  REQUIRE(f.Transfer(1, box, offset) == VIRTIO_GPU_RESP_OK_NODATA);
  auto shot = f.gpu.Screenshot(0);
  REQUIRE(shot.ok());
  for (uint32_t y = 0; y < Fixture::kH; ++y) {
    for (uint32_t x = 0; x < Fixture::kW; ++x) {
      bool in = x >= 8 && x < 24 && y >= 4 && y < 12;
      const uint8_t* p = &shot->rgb[(y * Fixture::kW + x) * 3];
      INFO("pixel " << x << "," << y);
      REQUIRE(p[0] == static_cast<uint8_t>(R(x, y) + (in ? 1 : 0)));
    }
  }
  // Whole rows (one copy): rows 10 to 19 from their place in the backing.
  f.Draw(/*bias=*/2);
  REQUIRE(f.Transfer(1, {0, 10, Fixture::kW, 10}, 10 * Fixture::kW * 4) ==
          VIRTIO_GPU_RESP_OK_NODATA);
  shot = f.gpu.Screenshot(0);
  REQUIRE(shot.ok());
  for (uint32_t y = 0; y < Fixture::kH; ++y) {
    // Column 12: in the box above (bias 1, rows 4-11) and in these rows.
    int bias = (y >= 10 && y < 20) ? 2 : (y >= 4 && y < 12) ? 1 : 0;
    INFO("row " << y);
    REQUIRE(shot->rgb[(y * Fixture::kW + 12) * 3 + 1] == static_cast<uint8_t>(G(12, y) + bias));
  }
  REQUIRE(f.Transfer(1, {0, 40, Fixture::kW, 9}, 0) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  REQUIRE(f.Transfer(1, {0, 40, Fixture::kW, 8}, 41 * Fixture::kW * 4) ==
          VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);  // past the backing's end
  // A scanout of a sub-rectangle shows just that.
  REQUIRE(f.Scanout(0, 1, {8, 4, 16, 8}) == VIRTIO_GPU_RESP_OK_NODATA);
  shot = f.gpu.Screenshot(0);
  REQUIRE(shot.ok());
  REQUIRE(shot->width == 16);
  REQUIRE(shot->rgb[0] == static_cast<uint8_t>(R(8, 4) + 1));
}

TEST_CASE("virtio-gpu 2D: each format's bytes come out as the right colours") {
  struct Case {
    uint32_t format;
    uint8_t bytes[4];
  };
  // R = 0x11, G = 0x22, B = 0x33 in each format's byte order.
  const Case cases[] = {
      {VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, {0x33, 0x22, 0x11, 0xff}},
      {VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, {0x33, 0x22, 0x11, 0x00}},
      {VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM, {0xff, 0x11, 0x22, 0x33}},
      {VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM, {0x00, 0x11, 0x22, 0x33}},
      {VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, {0x11, 0x22, 0x33, 0xff}},
      {VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM, {0x11, 0x22, 0x33, 0x00}},
      {VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM, {0xff, 0x33, 0x22, 0x11}},
      {VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM, {0x00, 0x33, 0x22, 0x11}},
  };
  for (const Case& c : cases) {
    Fixture f;
    INFO("format " << c.format);
    REQUIRE(f.Create(1, 1, 1, c.format) == VIRTIO_GPU_RESP_OK_NODATA);
    REQUIRE(f.Attach(1, {{Fixture::kBacking, 4, 0}}) == VIRTIO_GPU_RESP_OK_NODATA);
    REQUIRE(f.mem->Write(GuestAddress(Fixture::kBacking), c.bytes).ok());
    REQUIRE(f.Transfer(1, {0, 0, 1, 1}, 0) == VIRTIO_GPU_RESP_OK_NODATA);
    REQUIRE(f.Scanout(0, 1, {0, 0, 1, 1}) == VIRTIO_GPU_RESP_OK_NODATA);
    auto shot = f.gpu.Screenshot(0);
    REQUIRE(shot.ok());
    REQUIRE(shot->rgb == std::vector<uint8_t>{0x11, 0x22, 0x33});
  }
}

TEST_CASE("virtio-gpu 2D: hostile requests get the spec's error responses") {
  Fixture f;
  f.Show();
  const uint32_t kW = Fixture::kW, kH = Fixture::kH;
  SECTION("resources") {
    REQUIRE(f.Create(0) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    REQUIRE(f.Create(1) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);  // exists
    REQUIRE(f.Create(2, kW, kH, 999) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    REQUIRE(f.Create(2, 0, kH) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    REQUIRE(f.Create(2, Gpu2d::kMaxDimension + 1, 1) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    // 1 MiB of host memory for all resources: 512x512x4 does not fit beside #1.
    REQUIRE(f.Create(2, 512, 512) == VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
    REQUIRE(f.Simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 7) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  }
  SECTION("backing") {
    REQUIRE(f.Attach(1) == VIRTIO_GPU_RESP_ERR_UNSPEC);  // has one already
    REQUIRE(f.Attach(9) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    REQUIRE(f.Create(2, 4, 4) == VIRTIO_GPU_RESP_OK_NODATA);
    // Outside guest RAM, wrapping, empty: ERR_UNSPEC, as QEMU answers.
    REQUIRE(f.Attach(2, {{test::kRamSize - 8, 64, 0}}) == VIRTIO_GPU_RESP_ERR_UNSPEC);
    REQUIRE(f.Attach(2, {{~0ull - 8, 64, 0}}) == VIRTIO_GPU_RESP_ERR_UNSPEC);
    REQUIRE(f.Attach(2, {{Fixture::kBacking, 0, 0}}) == VIRTIO_GPU_RESP_ERR_UNSPEC);
    // More entries claimed than the request holds, and too many.
    auto c = Cmd<virtio_gpu_resource_attach_backing>(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING);
    c.resource_id = 2;
    c.nr_entries = 2;
    REQUIRE(f.Run(Bytes(c)) == VIRTIO_GPU_RESP_ERR_UNSPEC);
    c.nr_entries = Gpu2d::kMaxBackingEntries + 1;
    REQUIRE(f.Run(Bytes(c)) == VIRTIO_GPU_RESP_ERR_UNSPEC);
    REQUIRE(f.Transfer(2, {0, 0, 4, 4}, 0) == VIRTIO_GPU_RESP_ERR_UNSPEC);  // no backing
    REQUIRE(f.Simple(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, 2) == VIRTIO_GPU_RESP_ERR_UNSPEC);
    REQUIRE(f.Simple(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, 1) == VIRTIO_GPU_RESP_OK_NODATA);
    REQUIRE(f.Transfer(1, {0, 0, kW, kH}, 0) == VIRTIO_GPU_RESP_ERR_UNSPEC);
  }
  SECTION("rectangles") {
    REQUIRE(f.Transfer(1, {1, 0, kW, kH}, 0) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    REQUIRE(f.Transfer(1, {0xffffffff, 0, 2, 1}, 0) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    REQUIRE(f.Transfer(1, {0, 0, kW, kH}, 4) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    REQUIRE(f.Transfer(1, {0, 0, 1, 1}, ~0ull) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    REQUIRE(f.Flush(1, {0, 0, kW, kH + 1}) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    REQUIRE(f.Flush(5) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    REQUIRE(f.Scanout(0, 1, {0, 0, kW + 1, kH}) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    REQUIRE(f.Scanout(0, 1, {0, 0, 0, kH}) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    REQUIRE(f.Scanout(1, 1) == VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
    REQUIRE(f.Scanout(0, 5) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  }
  SECTION("malformed requests") {
    REQUIRE(f.Run({1, 2, 3}) == VIRTIO_GPU_RESP_ERR_UNSPEC);
    auto c = Cmd<virtio_gpu_resource_create_2d>(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D);
    std::vector<uint8_t> cut = Bytes(c);
    cut.resize(cut.size() - 1);
    REQUIRE(f.Run(cut) == VIRTIO_GPU_RESP_ERR_UNSPEC);
    REQUIRE(f.Run(Bytes(Cmd<virtio_gpu_ctx_create>(VIRTIO_GPU_CMD_CTX_CREATE))) ==
            VIRTIO_GPU_RESP_ERR_UNSPEC);
    REQUIRE(f.Run(Bytes(Cmd<virtio_gpu_get_capset_info>(VIRTIO_GPU_CMD_GET_CAPSET_INFO))) ==
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    REQUIRE(f.Run(Bytes(Cmd<virtio_gpu_ctrl_hdr>(0x7777))) == VIRTIO_GPU_RESP_ERR_UNSPEC);
  }
  // None of it disturbed the picture.
  auto shot = f.gpu.Screenshot(0);
  REQUIRE(shot.ok());
  REQUIRE(f.gpu.stats().errors > 0);
}

TEST_CASE("virtio-gpu 2D: unref turns off the scanout showing it; reset empties all") {
  Fixture f;
  f.Show();
  REQUIRE(f.Simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 1) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(f.gpu.Screenshot(0).status().code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(f.gpu.stats().host_bytes == 0);
  f.Show();
  REQUIRE(f.Scanout(0, 0) == VIRTIO_GPU_RESP_OK_NODATA);  // output off
  REQUIRE(f.gpu.Screenshot(0).status().code() == absl::StatusCode::kFailedPrecondition);
  f.gpu.Reset();
  REQUIRE(f.gpu.stats().resources == 0);
  REQUIRE(f.Create(1) == VIRTIO_GPU_RESP_OK_NODATA);  // the id is free again
}

TEST_CASE("virtio-gpu: a fenced command's response carries its fence") {
  Fixture f;
  auto c = Cmd<virtio_gpu_ctrl_hdr>(VIRTIO_GPU_CMD_GET_DISPLAY_INFO);
  c.flags = VIRTIO_GPU_FLAG_FENCE;
  c.fence_id = 0x1234567890;
  c.ctx_id = 3;
  std::vector<uint8_t> resp = f.gpu.Execute(Bytes(c));
  REQUIRE(resp.size() == sizeof(virtio_gpu_resp_display_info));
  virtio_gpu_resp_display_info info;
  std::memcpy(&info, resp.data(), sizeof(info));
  REQUIRE(info.hdr.type == VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
  REQUIRE(info.hdr.flags == VIRTIO_GPU_FLAG_FENCE);
  REQUIRE(info.hdr.fence_id == 0x1234567890);
  REQUIRE(info.hdr.ctx_id == 3);
  REQUIRE(info.pmodes[0].enabled == 1);
  REQUIRE(info.pmodes[0].r.width == 800);
  REQUIRE(info.pmodes[0].r.height == 600);
  REQUIRE(info.pmodes[1].enabled == 0);
}

TEST_CASE("virtio-gpu: GET_EDID returns a valid EDID 1.4 block for the mode") {
  Fixture f;
  auto c = Cmd<virtio_gpu_cmd_get_edid>(VIRTIO_GPU_CMD_GET_EDID);
  std::vector<uint8_t> resp = f.gpu.Execute(Bytes(c));
  REQUIRE(resp.size() == sizeof(virtio_gpu_resp_edid));
  virtio_gpu_resp_edid e;
  std::memcpy(&e, resp.data(), sizeof(e));
  REQUIRE(e.hdr.type == VIRTIO_GPU_RESP_OK_EDID);
  REQUIRE(e.size == 128);
  const uint8_t header[8] = {0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0};
  REQUIRE(std::memcmp(e.edid, header, 8) == 0);
  uint8_t sum = 0;
  for (int i = 0; i < 128; ++i) sum += e.edid[i];
  REQUIRE(sum == 0);
  REQUIRE(e.edid[18] == 1);
  REQUIRE(e.edid[19] == 4);
  const uint8_t* dtd = e.edid + 54;  // the preferred mode
  REQUIRE((dtd[2] | ((dtd[4] >> 4) << 8)) == 800);
  REQUIRE((dtd[5] | ((dtd[7] >> 4) << 8)) == 600);
  REQUIRE((dtd[0] | (dtd[1] << 8)) > 0);
  REQUIRE(std::memcmp(e.edid + 77, "kindling\n", 9) == 0);
  c.scanout = 1;
  REQUIRE(f.Run(Bytes(c)) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  // A mode too large for EDID's fields is capped, not wrapped.
  std::array<uint8_t, 128> big = BuildEdid(16384, 16384);
  REQUIRE((big[56] | ((big[58] >> 4) << 8)) == 4095);
}

TEST_CASE("virtio-gpu: the device serves controlq, cuts short responses, refuses huge requests") {
  test::QueueEnv env;
  test::CountingInterrupt irq;
  Gpu gpu(GpuLimits{.width = 640, .height = 480}, *env.mem);
  REQUIRE(gpu.type() == DeviceType::kGpu);
  REQUIRE(gpu.features() == Bit(kGpuFEdid));
  uint32_t cfg[4];
  gpu.ReadConfig(0, {reinterpret_cast<uint8_t*>(cfg), sizeof(cfg)});
  REQUIRE(cfg[2] == 1);  // num_scanouts
  REQUIRE(cfg[3] == 0);  // num_capsets
  REQUIRE(gpu.Screenshot().status().code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(gpu.Activate({env.mem.get(), {&env.queue, 1}, &irq, 0, [](uint16_t) {}}).ok());
  const uint64_t req = 0x200000, resp = 0x210000;
  auto c = Cmd<virtio_gpu_ctrl_hdr>(VIRTIO_GPU_CMD_GET_DISPLAY_INFO);
  REQUIRE(env.mem->WriteObj(GuestAddress(req), c).ok());
  env.driver.AddChain({{req, sizeof(c), false}, {resp, 1024, true}});
  // A response buffer smaller than the response: what fits is written.
  env.driver.AddChain({{req, sizeof(c), false}, {resp + 2048, 30, true}});
  // A request larger than any command may be.
  env.driver.AddChain({{req, Gpu::kMaxRequest + 1, false}, {resp + 4096, 64, true}});
  REQUIRE(gpu.ProcessQueue(0).ok());
  REQUIRE(env.driver.used_idx() == 3);
  REQUIRE(env.driver.used(0).len == sizeof(virtio_gpu_resp_display_info));
  REQUIRE(env.mem->ReadObj<uint32_t>(GuestAddress(resp)).value() ==
          VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
  REQUIRE(env.mem->ReadObj<uint32_t>(GuestAddress(resp + 24 + 8)).value() == 640);
  REQUIRE(env.driver.used(1).len == 30);
  REQUIRE(env.driver.used(2).len == sizeof(virtio_gpu_ctrl_hdr));
  REQUIRE(env.mem->ReadObj<uint32_t>(GuestAddress(resp + 4096)).value() ==
          VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  REQUIRE(irq.queue > 0);
  auto counters = gpu.Counters();
  REQUIRE(counters[0] == std::pair<std::string, uint64_t>{"commands", 2});
  REQUIRE(counters[1] == std::pair<std::string, uint64_t>{"errors", 1});
  REQUIRE(gpu.CheckSnapshot().ok());
}

TEST_CASE("virtio-gpu: screenshots round-trip through PNG") {
  Fixture f;
  f.Show();
  auto shot = f.gpu.Screenshot(0);
  REQUIRE(shot.ok());
  auto png = EncodePng(*shot);
  REQUIRE(png.ok());
  REQUIRE(png->substr(1, 3) == "PNG");
  auto back = DecodePng(*png);
  INFO(back.status().message());
  REQUIRE(back.ok());
  RequirePattern(*back, Fixture::kW, Fixture::kH);
  REQUIRE(DecodePng(*png, 100).status().code() == absl::StatusCode::kResourceExhausted);
  REQUIRE(DecodePng("not a png").status().code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(DecodePng(png->substr(0, png->size() / 2)).status().code() ==
          absl::StatusCode::kInvalidArgument);
  REQUIRE(EncodePng(GpuImage{2, 2, {1, 2, 3}}).status().code() ==
          absl::StatusCode::kInvalidArgument);
}

TEST_CASE("virtio-gpu state: saved and restored, the picture and backing carry over") {
  Fixture f;
  f.Show();
  REQUIRE(f.Create(2, 8, 8, VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM) == VIRTIO_GPU_RESP_OK_NODATA);
  GpuState saved = f.gpu.SaveState();
  REQUIRE(saved.resources.size() == 2);
  REQUIRE(saved.scanout_resource == 1);
  Gpu2d other(*f.mem, f.gpu.limits());
  REQUIRE(other.RestoreState(saved).ok());
  auto shot = other.Screenshot(0);
  REQUIRE(shot.ok());
  RequirePattern(*shot, Fixture::kW, Fixture::kH);
  REQUIRE(other.stats().host_bytes == f.gpu.stats().host_bytes);
  // The backing came along: a transfer after the restore reads the guest.
  Fixture g;  // the same guest memory layout, restored into a fresh device
  REQUIRE(g.gpu.RestoreState(saved).ok());
  g.Draw(/*bias=*/3);
  REQUIRE(g.Transfer(1, {0, 0, Fixture::kW, Fixture::kH}, 0) == VIRTIO_GPU_RESP_OK_NODATA);
  shot = g.gpu.Screenshot(0);
  REQUIRE(shot.ok());
  REQUIRE(shot->rgb[0] == static_cast<uint8_t>(R(0, 0) + 3));
  // Resource 2 has no backing: still none.
  REQUIRE(g.Transfer(2, {0, 0, 8, 8}, 0) == VIRTIO_GPU_RESP_ERR_UNSPEC);
}

TEST_CASE("virtio-gpu state: a hostile saved state is refused by name, the device left empty") {
  Fixture f;
  f.Show();
  const GpuState good = f.gpu.SaveState();
  auto refused = [&](const std::function<void(GpuState&)>& spoil, const std::string& why) {
    GpuState s = good;
    spoil(s);
    Gpu2d d(*f.mem, f.gpu.limits());
    absl::Status st = d.RestoreState(s);
    INFO(why << ": " << st.message());
    REQUIRE(st.code() == absl::StatusCode::kInvalidArgument);
    REQUIRE(std::string(st.message()).find(why) != std::string::npos);
    REQUIRE(d.stats().resources == 0);
    REQUIRE(d.Screenshot(0).status().code() == absl::StatusCode::kFailedPrecondition);
  };
  refused([](GpuState& s) { s.resources[0].id = 0; }, "id 0 or a duplicate");
  refused([](GpuState& s) { s.resources.push_back(s.resources[0]); }, "id 0 or a duplicate");
  refused([](GpuState& s) { s.resources[0].format = 5; }, "format 5");
  refused([](GpuState& s) { s.resources[0].width = 100000; }, "size 100000x");
  refused([](GpuState& s) { s.resources[0].pixels.pop_back(); }, "bytes of pixels, not");
  refused([](GpuState& s) { s.resources[0].backing[0].first = test::kRamSize; },
          "is not guest RAM");
  refused([](GpuState& s) { s.resources[0].backing.clear(); }, "0 backing entries");
  refused([](GpuState& s) { s.scanout_width = Fixture::kW + 1; }, "which does not hold it");
  refused([](GpuState& s) { s.scanout_resource = 9; }, "which does not hold it");
  refused([](GpuState& s) { s.cursor_resource = 9; }, "cursor's resource 9");
  refused(
      [](GpuState& s) {
        s.resources[0].width = s.resources[0].height = 1024;  // 4 MiB > the 1 MiB limit
        s.resources[0].pixels.resize(4 << 20);
      },
      "does not fit");
}

