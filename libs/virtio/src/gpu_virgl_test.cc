// virgl 3D on llvmpipe: VirglRenderer in this process and behind
// kindling-gpu (RemoteRenderer), through the device's router: capsets, a
// context, a render target cleared by a virgl command stream and read back
// into guest RAM with TRANSFER_FROM_HOST_3D, fences, the 3D scanout's
// screenshot, and the errors hostile requests get.
#include <linux/virtio_gpu.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <functional>

#include "virtio/gpu.h"
#include "virtio/gpu_remote.h"
#include "virtio/gpu_virgl.h"

using namespace virtio;
using vm_memory::GuestAddress;

namespace {

constexpr uint64_t kRam = 16 << 20;
constexpr uint64_t kBacking = 0x100000;
constexpr uint32_t kW = 64, kH = 32;
constexpr uint32_t kCtx = 7, kRes = 42;
constexpr uint32_t kFormat = VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM;  // virgl's number too
constexpr uint32_t kBindRenderTarget = 1 << 1;

std::unique_ptr<vm_memory::GuestMemory> Ram() {
  vm_memory::RegionSpec spec{GuestAddress(0), kRam};
  auto mem = vm_memory::GuestMemory::Create({&spec, 1});
  REQUIRE(mem.ok());
  return std::move(*mem);
}

template <typename T>
std::vector<uint8_t> Bytes(const T& cmd) {
  const auto* p = reinterpret_cast<const uint8_t*>(&cmd);
  return {p, p + sizeof(T)};
}

template <typename T>
T Cmd(uint32_t type, uint32_t ctx = 0) {
  T c{};
  c.hdr.type = type;
  c.hdr.ctx_id = ctx;
  return c;
}

uint32_t TypeOf(const std::vector<uint8_t>& resp) {
  REQUIRE(resp.size() >= sizeof(virtio_gpu_ctrl_hdr));
  virtio_gpu_ctrl_hdr h;
  std::memcpy(&h, resp.data(), sizeof(h));
  return h.type;
}

uint32_t F2u(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// A virgl command stream: a surface on `res`, bound as the only colour
// buffer, cleared to (r, g, b, 1) (virgl_protocol.h: CREATE_OBJECT=1 with
// OBJECT_SURFACE=8, SET_FRAMEBUFFER_STATE=5, CLEAR=7 of COLOR0=1<<2).
std::vector<uint32_t> ClearStream(uint32_t res, float r, float g, float b) {
  auto cmd0 = [](uint32_t cmd, uint32_t obj, uint32_t len) { return cmd | obj << 8 | len << 16; };
  return {cmd0(1, 8, 5), 1, res, kFormat, 0, 0,       // surface 1
          cmd0(5, 0, 3), 1, 0,   1,                   // framebuffer: 1 cbuf, no zsurf
          cmd0(7, 0, 8), 1 << 2, F2u(r), F2u(g), F2u(b), F2u(1.0f), 0, 0, 0};
}

// Runs requests against one of: a VirglRenderer, a RemoteRenderer, a Gpu.
using Exec = std::function<std::vector<uint8_t>(const std::vector<uint8_t>&)>;

uint32_t CreateContext(const Exec& run, uint32_t ctx = kCtx) {
  auto c = Cmd<virtio_gpu_ctx_create>(VIRTIO_GPU_CMD_CTX_CREATE, ctx);
  c.nlen = 4;
  std::memcpy(c.debug_name, "test", 4);
  return TypeOf(run(Bytes(c)));
}

uint32_t Create3d(const Exec& run, uint32_t id = kRes, uint32_t w = kW, uint32_t h = kH) {
  auto c = Cmd<virtio_gpu_resource_create_3d>(VIRTIO_GPU_CMD_RESOURCE_CREATE_3D);
  c.resource_id = id;
  c.target = 2;  // PIPE_TEXTURE_2D
  c.format = kFormat;
  c.bind = kBindRenderTarget;
  c.width = w;
  c.height = h;
  c.depth = 1;
  c.array_size = 1;
  return TypeOf(run(Bytes(c)));
}

uint32_t Attach(const Exec& run, uint32_t id, uint64_t addr, uint32_t len) {
  auto c = Cmd<virtio_gpu_resource_attach_backing>(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING);
  c.resource_id = id;
  c.nr_entries = 1;
  std::vector<uint8_t> req = Bytes(c);
  auto e = Bytes(virtio_gpu_mem_entry{addr, len, 0});
  req.insert(req.end(), e.begin(), e.end());
  return TypeOf(run(req));
}

uint32_t CtxAttach(const Exec& run, uint32_t ctx, uint32_t id) {
  auto c = Cmd<virtio_gpu_ctx_resource>(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, ctx);
  c.resource_id = id;
  return TypeOf(run(Bytes(c)));
}

std::vector<uint8_t> SubmitRequest(uint32_t ctx, const std::vector<uint32_t>& stream,
                                   uint64_t fence = 0) {
  auto c = Cmd<virtio_gpu_cmd_submit>(VIRTIO_GPU_CMD_SUBMIT_3D, ctx);
  c.size = stream.size() * 4;
  if (fence) {
    c.hdr.flags = VIRTIO_GPU_FLAG_FENCE;
    c.hdr.fence_id = fence;
  }
  std::vector<uint8_t> req = Bytes(c);
  const auto* p = reinterpret_cast<const uint8_t*>(stream.data());
  req.insert(req.end(), p, p + stream.size() * 4);
  return req;
}

virtio_gpu_transfer_host_3d Transfer(uint32_t type, uint32_t ctx, uint32_t id, uint32_t w,
                                     uint32_t h) {
  auto t = Cmd<virtio_gpu_transfer_host_3d>(type, ctx);
  t.resource_id = id;
  t.box = {0, 0, 0, w, h, 1};
  return t;
}

// The whole story a 3D test guest tells: capsets, a context, a render
// target with backing, a fenced clear, a fenced readback into guest RAM.
void ClearAndReadBack(const Exec& run, vm_memory::GuestMemory& mem) {
  auto info = Cmd<virtio_gpu_get_capset_info>(VIRTIO_GPU_CMD_GET_CAPSET_INFO);
  info.capset_index = 1;
  std::vector<uint8_t> resp = run(Bytes(info));
  REQUIRE(TypeOf(resp) == VIRTIO_GPU_RESP_OK_CAPSET_INFO);
  virtio_gpu_resp_capset_info ci;
  REQUIRE(resp.size() == sizeof(ci));
  std::memcpy(&ci, resp.data(), sizeof(ci));
  REQUIRE(ci.capset_id == VIRTIO_GPU_CAPSET_VIRGL2);
  REQUIRE(ci.capset_max_size > 100);
  auto get = Cmd<virtio_gpu_get_capset>(VIRTIO_GPU_CMD_GET_CAPSET);
  get.capset_id = ci.capset_id;
  get.capset_version = ci.capset_max_version;
  resp = run(Bytes(get));
  REQUIRE(TypeOf(resp) == VIRTIO_GPU_RESP_OK_CAPSET);
  REQUIRE(resp.size() == sizeof(virtio_gpu_ctrl_hdr) + ci.capset_max_size);
  uint32_t max_version;  // virgl_caps_v2 starts with max_version
  std::memcpy(&max_version, resp.data() + sizeof(virtio_gpu_ctrl_hdr), 4);
  REQUIRE(max_version >= 1);

  REQUIRE(CreateContext(run) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(Create3d(run) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(Attach(run, kRes, kBacking, kW * kH * 4) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(CtxAttach(run, kCtx, kRes) == VIRTIO_GPU_RESP_OK_NODATA);
  resp = run(SubmitRequest(kCtx, ClearStream(kRes, 1.0f, 0.5f, 0.0f), 11));
  REQUIRE(TypeOf(resp) == VIRTIO_GPU_RESP_OK_NODATA);
  virtio_gpu_ctrl_hdr h;
  std::memcpy(&h, resp.data(), sizeof(h));
  REQUIRE((h.flags & VIRTIO_GPU_FLAG_FENCE) != 0);
  REQUIRE(h.fence_id == 11);

  REQUIRE(mem.Write(GuestAddress(kBacking), std::vector<uint8_t>(kW * kH * 4, 0x55)).ok());
  auto t = Transfer(VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D, kCtx, kRes, kW, kH);
  t.hdr.flags = VIRTIO_GPU_FLAG_FENCE;
  t.hdr.fence_id = 12;
  REQUIRE(TypeOf(run(Bytes(t))) == VIRTIO_GPU_RESP_OK_NODATA);
  std::vector<uint8_t> px(kW * kH * 4);
  REQUIRE(mem.Read(GuestAddress(kBacking), px).ok());
  for (uint32_t i = 0; i < kW * kH; i += 97) {  // B, G, R, X
    INFO("pixel " << i);
    REQUIRE(px[i * 4 + 0] == 0);
    REQUIRE((px[i * 4 + 1] == 127 || px[i * 4 + 1] == 128));
    REQUIRE(px[i * 4 + 2] == 255);
  }
}

struct Local {
  std::unique_ptr<vm_memory::GuestMemory> mem = Ram();
  std::unique_ptr<VirglRenderer> r;
  Local() {
    auto made = VirglRenderer::Create(*mem, 64 << 20);
    REQUIRE(made.ok());
    r = std::move(*made);
  }
  Exec run() {
    return [this](const std::vector<uint8_t>& req) { return r->Execute(req); };
  }
};

}  // namespace

TEST_CASE("virgl: capsets, a context, a clear read back into guest RAM, fences") {
  Local l;
  INFO(l.r->info().name);
  REQUIRE(l.r->info().name.find("virglrenderer on ") == 0);
  REQUIRE(l.r->info().num_capsets == 2);
  // One renderer per process: virglrenderer's state is global.
  auto second = VirglRenderer::Create(*l.mem, 1 << 20);
  REQUIRE(absl::IsFailedPrecondition(second.status()));
  ClearAndReadBack(l.run(), *l.mem);
  auto px = l.r->ReadPixels(kRes, 0, 0, kW, kH);
  REQUIRE(px.ok());
  REQUIRE(px->format == kFormat);
  REQUIRE(px->data[2] == 255);
  REQUIRE(l.r->host_bytes() > 0);
}

TEST_CASE("virgl: hostile 3D requests get the spec's errors and nothing else") {
  Local l;
  Exec run = l.run();
  REQUIRE(CreateContext(run) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(CreateContext(run) == VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);  // twice
  REQUIRE(CreateContext(run, 0) == VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
  REQUIRE(Create3d(run) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(Create3d(run) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);       // twice
  REQUIRE(Create3d(run, 0) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  REQUIRE(Create3d(run, 50, 0, 1) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  REQUIRE(Create3d(run, 50, 16385, 1) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  REQUIRE(Create3d(run, 50, 16384, 16384) == VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);  // 64 MiB cap
  // A transfer before any backing.
  REQUIRE(Create3d(run, 43) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(CtxAttach(run, kCtx, 43) == VIRTIO_GPU_RESP_OK_NODATA);
  auto nob = Transfer(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, kCtx, 43, kW, kH);
  REQUIRE(TypeOf(run(Bytes(nob))) == VIRTIO_GPU_RESP_ERR_UNSPEC);
  // Backing outside guest RAM, or no entries.
  REQUIRE(Attach(run, kRes, kRam - 4096, 8192) == VIRTIO_GPU_RESP_ERR_UNSPEC);
  REQUIRE(Attach(run, kRes, ~0ull - 10, 100) == VIRTIO_GPU_RESP_ERR_UNSPEC);
  REQUIRE(Attach(run, 99, kBacking, 4096) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  // Boxes outside the resource, a context it is not attached to.
  auto t = Transfer(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, kCtx, kRes, kW, kH);
  REQUIRE(Attach(run, kRes, kBacking, kW * kH * 4) == VIRTIO_GPU_RESP_OK_NODATA);
  // Not attached to the context yet: refused before virglrenderer would
  // put the context in error.
  REQUIRE(TypeOf(run(Bytes(t))) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  REQUIRE(CtxAttach(run, kCtx, kRes) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(CtxAttach(run, 99, kRes) == VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
  REQUIRE(CtxAttach(run, kCtx, 99) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  REQUIRE(TypeOf(run(Bytes(t))) == VIRTIO_GPU_RESP_OK_NODATA);
  t.box.x = 0xffffffff;  // x + w wraps in 32 bits
  REQUIRE(TypeOf(run(Bytes(t))) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  t = Transfer(VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D, kCtx, kRes, kW, kH + 1);
  REQUIRE(TypeOf(run(Bytes(t))) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  t = Transfer(VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D, 99, kRes, kW, kH);
  REQUIRE(TypeOf(run(Bytes(t))) == VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
  t = Transfer(VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D, kCtx, kRes, kW, kH);
  t.level = 3;
  REQUIRE(TypeOf(run(Bytes(t))) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  // Submissions: unknown context, a size past the request or not whole
  // dwords, a stream virgl cannot decode.
  REQUIRE(TypeOf(run(SubmitRequest(99, {0}))) == VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
  std::vector<uint8_t> lying = SubmitRequest(kCtx, {0, 0});
  lying[sizeof(virtio_gpu_ctrl_hdr)] = 12;  // says 12 bytes, carries 8
  REQUIRE(TypeOf(run(lying)) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  lying[sizeof(virtio_gpu_ctrl_hdr)] = 6;
  REQUIRE(TypeOf(run(lying)) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  std::vector<uint32_t> garbage = {0xffff00ff, 1, 2, 3};  // length past the stream
  uint32_t answer = TypeOf(run(SubmitRequest(kCtx, garbage)));
  REQUIRE((answer == VIRTIO_GPU_RESP_OK_NODATA || answer == VIRTIO_GPU_RESP_ERR_UNSPEC));
  // Capsets past the count, versions past the maximum, short requests.
  auto info = Cmd<virtio_gpu_get_capset_info>(VIRTIO_GPU_CMD_GET_CAPSET_INFO);
  info.capset_index = 2;
  REQUIRE(TypeOf(run(Bytes(info))) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  auto get = Cmd<virtio_gpu_get_capset>(VIRTIO_GPU_CMD_GET_CAPSET);
  get.capset_id = VIRTIO_GPU_CAPSET_VIRGL2;
  get.capset_version = 1000;
  REQUIRE(TypeOf(run(Bytes(get))) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  std::vector<uint8_t> short_create = Bytes(Cmd<virtio_gpu_resource_create_3d>(
      VIRTIO_GPU_CMD_RESOURCE_CREATE_3D));
  short_create.resize(30);
  REQUIRE(TypeOf(run(short_create)) == VIRTIO_GPU_RESP_ERR_UNSPEC);
  // Unref and destroy; the renderer is empty again.
  auto u = Cmd<virtio_gpu_resource_unref>(VIRTIO_GPU_CMD_RESOURCE_UNREF);
  u.resource_id = kRes;
  REQUIRE(TypeOf(run(Bytes(u))) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(TypeOf(run(Bytes(u))) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  u.resource_id = 43;
  REQUIRE(TypeOf(run(Bytes(u))) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(l.r->host_bytes() == 0);
  auto d = Cmd<virtio_gpu_ctx_destroy>(VIRTIO_GPU_CMD_CTX_DESTROY, kCtx);
  REQUIRE(TypeOf(run(Bytes(d))) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(TypeOf(run(Bytes(d))) == VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
}

TEST_CASE("virgl: the device routes 2D and 3D in one id space; a 3D scanout's screenshot") {
  auto mem = Ram();
  auto r = VirglRenderer::Create(*mem, 64 << 20);
  REQUIRE(r.ok());
  Gpu gpu(GpuLimits{.width = 640, .height = 480, .max_host_bytes = 8 << 20}, *mem,
          std::move(*r));
  REQUIRE((gpu.features() & (1ull << kGpuFVirgl)) != 0);
  Exec run = [&](const std::vector<uint8_t>& req) { return gpu.Execute(req); };
  ClearAndReadBack(run, *mem);
  // A 2D resource may not take a 3D resource's id, nor the other way.
  auto c2 = Cmd<virtio_gpu_resource_create_2d>(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D);
  c2.resource_id = kRes;
  c2.format = kFormat;
  c2.width = c2.height = 16;
  REQUIRE(TypeOf(run(Bytes(c2))) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  c2.resource_id = 5;
  REQUIRE(TypeOf(run(Bytes(c2))) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(Create3d(run, 5) == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  // One memory limit for both kinds: 8 MiB, of which the 3D target holds
  // its bound (64 * 32 * 16 bytes) and the 2D one 1 KiB.
  REQUIRE(Create3d(run, 60, 1024, 512) == VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
  // The 3D target on the scanout: the screenshot reads it back.
  auto s = Cmd<virtio_gpu_set_scanout>(VIRTIO_GPU_CMD_SET_SCANOUT);
  s.resource_id = kRes;
  s.r = {0, 0, kW, kH};
  REQUIRE(TypeOf(run(Bytes(s))) == VIRTIO_GPU_RESP_OK_NODATA);
  s.r.width = kW + 1;
  REQUIRE(TypeOf(run(Bytes(s))) == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  auto f = Cmd<virtio_gpu_resource_flush>(VIRTIO_GPU_CMD_RESOURCE_FLUSH);
  f.resource_id = kRes;
  f.r = {0, 0, kW, kH};
  REQUIRE(TypeOf(run(Bytes(f))) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(gpu.Activate({mem.get(), {}, nullptr, 0, [](uint16_t) {}}).ok());
  auto shot = gpu.Screenshot(0);
  REQUIRE(shot.ok());
  REQUIRE(shot->width == kW);
  REQUIRE(shot->height == kH);
  REQUIRE(shot->rgb[0] == 255);  // R
  REQUIRE(shot->rgb[2] == 0);    // B
  // Virgl state cannot be saved: snapshots refuse up front, naming it.
  REQUIRE(absl::IsFailedPrecondition(gpu.CheckSnapshot()));
  REQUIRE(std::string(gpu.CheckSnapshot().message()).find("virgl") != std::string::npos);
  // Unref of the 3D scanout resource turns the 3D scanout off.
  auto u = Cmd<virtio_gpu_resource_unref>(VIRTIO_GPU_CMD_RESOURCE_UNREF);
  u.resource_id = kRes;
  REQUIRE(TypeOf(run(Bytes(u))) == VIRTIO_GPU_RESP_OK_NODATA);
  REQUIRE(absl::IsFailedPrecondition(gpu.Screenshot(0).status()));
}

TEST_CASE("virgl: kindling-gpu serves the same through a socket; a gone renderer is ERR_UNSPEC") {
  auto mem = Ram();
  auto remote = RemoteRenderer::Spawn("libs/virtio/kindling-gpu", *mem, 64 << 20);
  REQUIRE(remote.ok());
  INFO((*remote)->info().name);
  REQUIRE((*remote)->info().name.find("virglrenderer on ") == 0);
  REQUIRE((*remote)->info().num_capsets == 2);
  RemoteRenderer& r = **remote;
  Exec run = [&](const std::vector<uint8_t>& req) { return r.Execute(req); };
  ClearAndReadBack(run, *mem);
  auto px = r.ReadPixels(kRes, 1, 1, 8, 4);
  REQUIRE(px.ok());
  REQUIRE(px->data.size() == 8 * 4 * 4);
  REQUIRE(px->data[2] == 255);
  auto bad = r.ReadPixels(kRes, 0, 0, kW + 1, 1);  // an error frame; the renderer serves on
  REQUIRE(absl::IsInvalidArgument(bad.status()));
  REQUIRE(r.health().ok());
  r.Reset();
  REQUIRE(absl::IsNotFound(r.ReadPixels(kRes, 0, 0, 1, 1).status()));

  // A binary that is not there, and a peer that hangs up at once.
  auto missing = RemoteRenderer::Spawn("/nonexistent/kindling-gpu", *mem, 1 << 20);
  REQUIRE(!missing.ok());
  REQUIRE(std::string(missing.status().message()).find("/nonexistent/kindling-gpu") !=
          std::string::npos);
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  ::close(sv[1]);
  auto hungup = RemoteRenderer::Connect(vm_memory::UniqueFd(sv[0]), *mem, 1 << 20);
  REQUIRE(!hungup.ok());
}
