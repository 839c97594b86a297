// Internal to libs/virtio: the pieces of virtio-gpu's wire format that the
// 2D engine, the virgl renderer and the device's router share.
#ifndef VIRTIO_SRC_GPU_WIRE_H_
#define VIRTIO_SRC_GPU_WIRE_H_

#include <linux/virtio_gpu.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace virtio::gpu_wire {

// The command struct at the start of `req`, or false if it is shorter.
template <typename T>
bool Load(std::span<const uint8_t> req, T& out) {
  if (req.size() < sizeof(T)) return false;
  std::memcpy(&out, req.data(), sizeof(T));
  return true;
}

// A response: a header of `type` that echoes the request's fence (spec
// 5.7.6.7: the fence is signalled with the response), then `body`.
inline std::vector<uint8_t> Respond(const virtio_gpu_ctrl_hdr& in, uint32_t type,
                                    std::span<const uint8_t> body) {
  virtio_gpu_ctrl_hdr out{};
  out.type = type;
  if (in.flags & VIRTIO_GPU_FLAG_FENCE) {
    out.flags = in.flags & (VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX);
    out.fence_id = in.fence_id;
    out.ctx_id = in.ctx_id;
    if (in.flags & VIRTIO_GPU_FLAG_INFO_RING_IDX) out.ring_idx = in.ring_idx;
  }
  std::vector<uint8_t> resp(sizeof(out) + body.size());
  std::memcpy(resp.data(), &out, sizeof(out));
  if (!body.empty()) std::memcpy(resp.data() + sizeof(out), body.data(), body.size());
  return resp;
}

// The body of a response struct: its bytes after the header.
template <typename T>
std::span<const uint8_t> BodyOf(const T& resp) {
  return {reinterpret_cast<const uint8_t*>(&resp) + sizeof(virtio_gpu_ctrl_hdr),
          sizeof(T) - sizeof(virtio_gpu_ctrl_hdr)};
}

// A request struct's bytes.
template <typename T>
std::span<const uint8_t> Bytes(const T& cmd) {
  return {reinterpret_cast<const uint8_t*>(&cmd), sizeof(T)};
}

}  // namespace virtio::gpu_wire

#endif  // VIRTIO_SRC_GPU_WIRE_H_
