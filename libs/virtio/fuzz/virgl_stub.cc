// A stand-in for the virglrenderer calls VirglRenderer makes, for fuzzing
// the checks in front of them without GL: resources and contexts are
// remembered so that an id virglrenderer does not know aborts (our
// checks must have caught it), fences signal at once, transfers and
// submissions succeed.
#include <sys/uio.h>

#include <cstdlib>
#include <cstring>
#include <set>

extern "C" {
#include <virgl/virglrenderer.h>
}

namespace {
virgl_renderer_callbacks* g_cb = nullptr;
void* g_cookie = nullptr;
std::set<uint32_t> g_resources, g_contexts;
void Known(const std::set<uint32_t>& s, uint32_t id) {
  if (!s.count(id)) std::abort();
}
}  // namespace

extern "C" {
int virgl_renderer_init(void* cookie, int, virgl_renderer_callbacks* cb) {
  g_cookie = cookie;
  g_cb = cb;
  return 0;
}
void virgl_renderer_cleanup(void*) {
  g_resources.clear();
  g_contexts.clear();
}
void virgl_renderer_get_cap_set(uint32_t set, uint32_t* max_ver, uint32_t* max_size) {
  *max_ver = set == 1 || set == 2 ? set : 0;
  *max_size = set == 1 ? 308 : set == 2 ? 1376 : 0;
}
void virgl_renderer_fill_caps(uint32_t set, uint32_t, void* caps) {
  std::memset(caps, 0, set == 1 ? 308 : 1376);
}
int virgl_renderer_context_create(uint32_t handle, uint32_t nlen, const char*) {
  if (nlen > 64 || !g_contexts.insert(handle).second) std::abort();
  return 0;
}
void virgl_renderer_context_destroy(uint32_t handle) {
  Known(g_contexts, handle);
  g_contexts.erase(handle);
}
int virgl_renderer_resource_create(virgl_renderer_resource_create_args* args, iovec*, uint32_t) {
  if (args->format == 0) return -1;  // a format virgl refuses
  if (!g_resources.insert(args->handle).second) std::abort();
  return 0;
}
void virgl_renderer_resource_unref(uint32_t handle) {
  Known(g_resources, handle);
  g_resources.erase(handle);
}
int virgl_renderer_resource_attach_iov(int handle, iovec* iov, int n) {
  Known(g_resources, handle);
  for (int i = 0; i < n; ++i) std::memset(iov[i].iov_base, 0xab, iov[i].iov_len);  // in RAM?
  return 0;
}
void virgl_renderer_resource_detach_iov(int handle, iovec** iov, int* n) {
  Known(g_resources, handle);
  if (iov) *iov = nullptr;
  if (n) *n = 0;
}
void virgl_renderer_ctx_attach_resource(int ctx, int res) {
  Known(g_contexts, ctx);
  Known(g_resources, res);
}
void virgl_renderer_ctx_detach_resource(int ctx, int res) {
  Known(g_contexts, ctx);
  Known(g_resources, res);
}
int virgl_renderer_transfer_write_iov(uint32_t handle, uint32_t ctx, int, uint32_t, uint32_t,
                                      virgl_box*, uint64_t, iovec*, unsigned int) {
  Known(g_resources, handle);
  if (ctx) Known(g_contexts, ctx);
  return 0;
}
int virgl_renderer_transfer_read_iov(uint32_t handle, uint32_t ctx, uint32_t, uint32_t, uint32_t,
                                     virgl_box*, uint64_t, iovec* iov, int n) {
  Known(g_resources, handle);
  if (ctx) Known(g_contexts, ctx);
  for (int i = 0; i < n; ++i) std::memset(iov[i].iov_base, 0x7f, iov[i].iov_len);
  return 0;
}
int virgl_renderer_submit_cmd(void*, int ctx, int) {
  Known(g_contexts, static_cast<uint32_t>(ctx));
  return 0;
}
int virgl_renderer_create_fence(int id, uint32_t) {
  g_cb->write_fence(g_cookie, static_cast<uint32_t>(id));
  return 0;
}
void virgl_renderer_poll(void) {}
int virgl_renderer_get_poll_fd(void) { return -1; }
}
