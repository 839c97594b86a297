#include "virtio/gpu_virgl.h"

#include <dlfcn.h>
#include <linux/virtio_gpu.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "gpu_wire.h"
#include "virtio/gpu_2d.h"

extern "C" {
#include <virgl/virglrenderer.h>
}

namespace virtio {
namespace {

using gpu_wire::Load;

constexpr auto kFenceTimeout = std::chrono::seconds(10);
constexpr uint32_t kTexture2d = 2;    // PIPE_TEXTURE_2D
constexpr uint32_t kTextureRect = 5;  // PIPE_TEXTURE_RECT
constexpr uint32_t kCapsets[] = {VIRTIO_GPU_CAPSET_VIRGL, VIRTIO_GPU_CAPSET_VIRGL2};

// virglrenderer's box (its virgl_hw.h; opaque in the public header).
struct Box {
  uint32_t x, y, z, w, h, d;
};

std::atomic<bool> g_live{false};  // virglrenderer's state is per process
int g_cookie;                     // virgl_renderer_init wants a non-null cookie
VirglRenderer* g_renderer = nullptr;

// The GL renderer's name, from the context virglrenderer made current at
// init (through libepoxy, which virglrenderer loads): "llvmpipe (...)".
std::string GlRendererName() {
  using GetString = const unsigned char* (*)(unsigned);
  auto* fn = reinterpret_cast<GetString*>(dlsym(RTLD_DEFAULT, "epoxy_glGetString"));
  const unsigned char* s = (fn && *fn) ? (*fn)(0x1F01 /* GL_RENDERER */) : nullptr;
  return s ? reinterpret_cast<const char*>(s) : "an unnamed GL renderer";
}

}  // namespace

VirglRenderer::VirglRenderer(vm_memory::GuestMemory& memory, uint64_t max_host_bytes)
    : memory_(memory), max_host_bytes_(max_host_bytes) {}

void VirglRenderer::WriteFence(void*, uint32_t fence) {
  if (g_renderer) g_renderer->fences_done_ = fence;
}

absl::StatusOr<std::unique_ptr<VirglRenderer>> VirglRenderer::Create(
    vm_memory::GuestMemory& memory, uint64_t max_host_bytes) {
  if (g_live.exchange(true)) {
    return absl::FailedPreconditionError("virglrenderer: this process already runs one");
  }
  static virgl_renderer_callbacks callbacks = {};
  callbacks.version = 1;
  callbacks.write_fence = &VirglRenderer::WriteFence;
  // THREAD_SYNC: virglrenderer waits for GL fences on a thread of its own
  // and signals an fd, which WaitFence sleeps on (no polling loop).
  int rc = virgl_renderer_init(
      &g_cookie,
      VIRGL_RENDERER_USE_EGL | VIRGL_RENDERER_USE_SURFACELESS | VIRGL_RENDERER_THREAD_SYNC,
      &callbacks);
  if (rc != 0) {
    g_live = false;
    return absl::UnavailableError(absl::StrCat(
        "virglrenderer: init with EGL on a surfaceless platform failed (", rc,
        "): no EGL driver (Mesa's libegl-mesa0 and libgl1-mesa-dri give llvmpipe)"));
  }
  std::unique_ptr<VirglRenderer> r(new VirglRenderer(memory, max_host_bytes));
  g_renderer = r.get();
  r->info_.name = absl::StrCat("virglrenderer on ", GlRendererName());
  for (uint32_t id : kCapsets) {
    uint32_t version = 0, size = 0;
    virgl_renderer_get_cap_set(id, &version, &size);
    if (size != 0) ++r->info_.num_capsets;
  }
  return r;
}

VirglRenderer::~VirglRenderer() {
  Reset();
  virgl_renderer_cleanup(&g_cookie);
  g_renderer = nullptr;
  g_live = false;
}

std::vector<uint8_t> VirglRenderer::Execute(std::span<const uint8_t> request) {
  virtio_gpu_ctrl_hdr in{};
  std::vector<uint8_t> body;
  uint32_t type = VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (Load(request, in)) {
    type = Dispatch(in, request, body);
    if (type < VIRTIO_GPU_RESP_ERR_UNSPEC && (in.flags & VIRTIO_GPU_FLAG_FENCE) &&
        !WaitFence(in.ctx_id)) {
      type = VIRTIO_GPU_RESP_ERR_UNSPEC;
    }
  }
  if (type >= VIRTIO_GPU_RESP_ERR_UNSPEC) body.clear();
  return gpu_wire::Respond(in, type, body);
}

uint32_t VirglRenderer::Dispatch(const virtio_gpu_ctrl_hdr& hdr, std::span<const uint8_t> req,
                                 std::vector<uint8_t>& body) {
  switch (hdr.type) {
    case VIRTIO_GPU_CMD_GET_CAPSET_INFO: return CapsetInfo(req, body);
    case VIRTIO_GPU_CMD_GET_CAPSET: return Capset(req, body);
    case VIRTIO_GPU_CMD_CTX_CREATE: return CreateContext(hdr.ctx_id, req);
    case VIRTIO_GPU_CMD_CTX_DESTROY: return DestroyContext(hdr.ctx_id);
    case VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE:
    case VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE: return AttachToContext(hdr.type, hdr.ctx_id, req);
    case VIRTIO_GPU_CMD_RESOURCE_CREATE_3D: return CreateResource(req);
    case VIRTIO_GPU_CMD_RESOURCE_UNREF: return Unref(req);
    case VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING: return AttachBacking(req);
    case VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING: return DetachBacking(req);
    case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D:
    case VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D: return Transfer(hdr.type, hdr.ctx_id, req);
    case VIRTIO_GPU_CMD_SUBMIT_3D: return Submit(hdr.ctx_id, req);
    default: return VIRTIO_GPU_RESP_ERR_UNSPEC;  // 2D and blob commands are not ours
  }
}

uint32_t VirglRenderer::CapsetInfo(std::span<const uint8_t> req,
                                   std::vector<uint8_t>& body) const {
  virtio_gpu_get_capset_info cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (cmd.capset_index >= info_.num_capsets) return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  virtio_gpu_resp_capset_info resp{};
  resp.capset_id = kCapsets[cmd.capset_index];
  virgl_renderer_get_cap_set(resp.capset_id, &resp.capset_max_version, &resp.capset_max_size);
  std::span<const uint8_t> b = gpu_wire::BodyOf(resp);
  body.assign(b.begin(), b.end());
  return VIRTIO_GPU_RESP_OK_CAPSET_INFO;
}

uint32_t VirglRenderer::Capset(std::span<const uint8_t> req, std::vector<uint8_t>& body) const {
  virtio_gpu_get_capset cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  uint32_t max_version = 0, size = 0;
  virgl_renderer_get_cap_set(cmd.capset_id, &max_version, &size);
  if (size == 0 || size > kMaxCapsetBytes || cmd.capset_version > max_version) {
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  body.assign(size, 0);
  virgl_renderer_fill_caps(cmd.capset_id, cmd.capset_version, body.data());
  return VIRTIO_GPU_RESP_OK_CAPSET;
}

uint32_t VirglRenderer::CreateContext(uint32_t ctx, std::span<const uint8_t> req) {
  virtio_gpu_ctx_create cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (ctx == 0 || contexts_.count(ctx)) return VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID;
  // context_init picks a capset-defined context type (Venus, ...): only
  // virgl's own (0) is offered.
  if (cmd.nlen > sizeof(cmd.debug_name) || cmd.context_init != 0) {
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (contexts_.size() >= kMaxContexts) return VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY;
  if (virgl_renderer_context_create(ctx, cmd.nlen, cmd.debug_name) != 0) {
    return VIRTIO_GPU_RESP_ERR_UNSPEC;
  }
  contexts_[ctx];
  return VIRTIO_GPU_RESP_OK_NODATA;
}

uint32_t VirglRenderer::DestroyContext(uint32_t ctx) {
  if (!contexts_.erase(ctx)) return VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID;
  virgl_renderer_context_destroy(ctx);
  return VIRTIO_GPU_RESP_OK_NODATA;
}

uint32_t VirglRenderer::AttachToContext(uint32_t type, uint32_t ctx,
                                        std::span<const uint8_t> req) {
  virtio_gpu_ctx_resource cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  auto c = contexts_.find(ctx);
  if (c == contexts_.end()) return VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID;
  if (!resources_.count(cmd.resource_id)) return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  if (type == VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE) {
    virgl_renderer_ctx_attach_resource(static_cast<int>(ctx), static_cast<int>(cmd.resource_id));
    c->second.insert(cmd.resource_id);
  } else {
    virgl_renderer_ctx_detach_resource(static_cast<int>(ctx), static_cast<int>(cmd.resource_id));
    c->second.erase(cmd.resource_id);
  }
  return VIRTIO_GPU_RESP_OK_NODATA;
}

uint32_t VirglRenderer::CreateResource(std::span<const uint8_t> req) {
  virtio_gpu_resource_create_3d cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (cmd.resource_id == 0 || resources_.count(cmd.resource_id)) {
    return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  }
  uint64_t bytes = Resource3dBytes(cmd.target, cmd.width, cmd.height, cmd.depth, cmd.array_size,
                                   cmd.last_level, cmd.nr_samples);
  if (bytes == 0) return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  if (resources_.size() >= kMaxResources || bytes > max_host_bytes_ - host_bytes_) {
    return VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY;
  }
  virgl_renderer_resource_create_args args{};
  args.handle = cmd.resource_id;
  args.target = cmd.target;
  args.format = cmd.format;
  args.bind = cmd.bind;
  args.width = cmd.width;
  args.height = cmd.height;
  args.depth = cmd.depth;
  args.array_size = cmd.array_size;
  args.last_level = cmd.last_level;
  args.nr_samples = cmd.nr_samples;
  args.flags = cmd.flags;
  if (virgl_renderer_resource_create(&args, nullptr, 0) != 0) {
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;  // a format or bind virgl refuses
  }
  Resource& r = resources_[cmd.resource_id];
  r.target = cmd.target;
  r.format = cmd.format;
  r.width = cmd.width;
  r.height = cmd.height;
  r.layers = std::max(cmd.depth, 1u) * std::max(cmd.array_size, 1u);
  r.last_level = cmd.last_level;
  r.bytes = bytes;
  host_bytes_ += bytes;
  return VIRTIO_GPU_RESP_OK_NODATA;
}

void VirglRenderer::DropResource(uint32_t id) {
  auto it = resources_.find(id);
  if (it->second.has_backing) {
    iovec* iov = nullptr;
    int n = 0;
    virgl_renderer_resource_detach_iov(static_cast<int>(id), &iov, &n);
  }
  virgl_renderer_resource_unref(id);  // detaches it from every context too
  for (auto& [ctx, attached] : contexts_) attached.erase(id);
  host_bytes_ -= it->second.bytes;
  resources_.erase(it);
}

uint32_t VirglRenderer::Unref(std::span<const uint8_t> req) {
  virtio_gpu_resource_unref cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (!resources_.count(cmd.resource_id)) return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  DropResource(cmd.resource_id);
  return VIRTIO_GPU_RESP_OK_NODATA;
}

uint32_t VirglRenderer::AttachBacking(std::span<const uint8_t> req) {
  virtio_gpu_resource_attach_backing cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  auto it = resources_.find(cmd.resource_id);
  if (it == resources_.end()) return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  Resource& res = it->second;
  if (res.has_backing || cmd.nr_entries == 0 || cmd.nr_entries > kMaxBackingEntries ||
      (req.size() - sizeof(cmd)) / sizeof(virtio_gpu_mem_entry) < cmd.nr_entries) {
    return VIRTIO_GPU_RESP_ERR_UNSPEC;  // as Gpu2d and QEMU answer it
  }
  std::vector<iovec> iov;
  for (uint32_t i = 0; i < cmd.nr_entries; ++i) {
    virtio_gpu_mem_entry e;
    std::memcpy(&e, req.data() + sizeof(cmd) + i * sizeof(e), sizeof(e));
    if (e.length == 0) return VIRTIO_GPU_RESP_ERR_UNSPEC;
    auto slices =
        memory_.GetSlices(vm_memory::GuestAddress(e.addr), e.length, vm_memory::Access::kWrite);
    if (!slices.ok()) return VIRTIO_GPU_RESP_ERR_UNSPEC;  // not guest RAM
    for (const vm_memory::VolatileSlice& s : *slices) iov.push_back(s.AsIovec());
  }
  if (virgl_renderer_resource_attach_iov(static_cast<int>(cmd.resource_id), iov.data(),
                                         static_cast<int>(iov.size())) != 0) {
    return VIRTIO_GPU_RESP_ERR_UNSPEC;
  }
  res.iov = std::move(iov);
  res.has_backing = true;
  return VIRTIO_GPU_RESP_OK_NODATA;
}

uint32_t VirglRenderer::DetachBacking(std::span<const uint8_t> req) {
  virtio_gpu_resource_detach_backing cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  auto it = resources_.find(cmd.resource_id);
  if (it == resources_.end()) return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  if (!it->second.has_backing) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  iovec* iov = nullptr;
  int n = 0;
  virgl_renderer_resource_detach_iov(static_cast<int>(cmd.resource_id), &iov, &n);
  it->second.iov.clear();
  it->second.has_backing = false;
  return VIRTIO_GPU_RESP_OK_NODATA;
}

uint32_t VirglRenderer::Transfer(uint32_t type, uint32_t ctx, std::span<const uint8_t> req) {
  virtio_gpu_transfer_host_3d cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  auto c = contexts_.find(ctx);
  if (ctx != 0 && c == contexts_.end()) return VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID;
  auto it = resources_.find(cmd.resource_id);
  if (it == resources_.end() || (ctx != 0 && !c->second.count(cmd.resource_id))) {
    return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;  // unknown, or not attached there
  }
  const Resource& res = it->second;
  const virtio_gpu_box& b = cmd.box;
  // The box lies in level 0's extent (virglrenderer checks the level's
  // own, smaller extent and the backing's length against the layout).
  if (!res.has_backing) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (cmd.level > res.last_level || uint64_t{b.x} + b.w > res.width ||
      uint64_t{b.y} + b.h > res.height || uint64_t{b.z} + b.d > res.layers) {
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  Box box{b.x, b.y, b.z, b.w, b.h, b.d};
  auto* vbox = reinterpret_cast<virgl_box*>(&box);
  int rc = type == VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D
               ? virgl_renderer_transfer_write_iov(cmd.resource_id, ctx, cmd.level, cmd.stride,
                                                   cmd.layer_stride, vbox, cmd.offset, nullptr, 0)
               : virgl_renderer_transfer_read_iov(cmd.resource_id, ctx, cmd.level, cmd.stride,
                                                  cmd.layer_stride, vbox, cmd.offset, nullptr, 0);
  return rc == 0 ? VIRTIO_GPU_RESP_OK_NODATA : VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
}

uint32_t VirglRenderer::Submit(uint32_t ctx, std::span<const uint8_t> req) {
  virtio_gpu_cmd_submit cmd;
  if (!Load(req, cmd)) return VIRTIO_GPU_RESP_ERR_UNSPEC;
  if (!contexts_.count(ctx)) return VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID;
  if (cmd.size % 4 != 0 || cmd.size > req.size() - sizeof(cmd)) {
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (cmd.size == 0) return VIRTIO_GPU_RESP_OK_NODATA;  // nothing to run
  std::vector<uint32_t> stream(cmd.size / 4);
  std::memcpy(stream.data(), req.data() + sizeof(cmd), cmd.size);
  // A stream virglrenderer cannot decode puts the context in error and
  // returns non-zero; the guest hears ERR_UNSPEC, as from QEMU.
  if (virgl_renderer_submit_cmd(stream.data(), static_cast<int>(ctx),
                                static_cast<int>(stream.size())) != 0) {
    return VIRTIO_GPU_RESP_ERR_UNSPEC;
  }
  return VIRTIO_GPU_RESP_OK_NODATA;
}

bool VirglRenderer::WaitFence(uint32_t ctx) {
  const uint32_t id = ++fences_created_;
  if (virgl_renderer_create_fence(static_cast<int>(id), contexts_.count(ctx) ? ctx : 0) != 0) {
    return false;
  }
  const auto deadline = std::chrono::steady_clock::now() + kFenceTimeout;
  const int fd = virgl_renderer_get_poll_fd();  // -1 without THREAD_SYNC
  for (;;) {
    virgl_renderer_poll();  // calls WriteFence for what has signalled
    if (static_cast<int32_t>(fences_done_ - id) >= 0) return true;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (fd < 0) {
      ::usleep(100);
      continue;
    }
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
  }
}

absl::StatusOr<Pixels3d> VirglRenderer::ReadPixels(uint32_t resource_id, uint32_t x, uint32_t y,
                                                   uint32_t width, uint32_t height) {
  auto it = resources_.find(resource_id);
  if (it == resources_.end()) {
    return absl::NotFoundError(absl::StrCat("3D resource ", resource_id, " does not exist"));
  }
  const Resource& res = it->second;
  if ((res.target != kTexture2d && res.target != kTextureRect) ||
      !Gpu2d::SupportedFormat(res.format)) {
    return absl::InvalidArgumentError(absl::StrCat("3D resource ", resource_id, " (target ",
                                                   res.target, ", format ", res.format,
                                                   ") is not a 4-byte colour 2D texture"));
  }
  if (width == 0 || height == 0 || uint64_t{x} + width > res.width ||
      uint64_t{y} + height > res.height) {
    return absl::InvalidArgumentError(absl::StrCat("rectangle ", width, "x", height, "+", x, "+",
                                                   y, " is outside 3D resource ", resource_id));
  }
  Pixels3d out{res.format, std::vector<uint8_t>(uint64_t{width} * height * 4)};
  Box box{x, y, 0, width, height, 1};
  iovec iov{out.data.data(), out.data.size()};
  int rc = virgl_renderer_transfer_read_iov(resource_id, 0, 0, width * 4, 0,
                                            reinterpret_cast<virgl_box*>(&box), 0, &iov, 1);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("virglrenderer could not read back 3D resource ", resource_id, " (", rc, ")"));
  }
  return out;
}

void VirglRenderer::Reset() {
  for (const auto& [ctx, attached] : contexts_) virgl_renderer_context_destroy(ctx);
  contexts_.clear();
  while (!resources_.empty()) DropResource(resources_.begin()->first);
  host_bytes_ = 0;
}

}  // namespace virtio
