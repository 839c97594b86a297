// kindling-gpu: the virgl renderer process. Started by RemoteRenderer::Spawn
// with a connected socket as fd N (`kindling-gpu --fd N`); serves until the
// VM process closes it. Logs the GL renderer it got to stderr.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "virtio/gpu_remote.h"
#include "virtio/gpu_virgl.h"

int main(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--fd") != 0) {
    std::fprintf(stderr, "usage: kindling-gpu --fd N (started by kindling for --gpu virgl)\n");
    return 2;
  }
  const int fd = std::atoi(argv[2]);
  absl::Status s = virtio::ServeRenderer(
      fd, [](vm_memory::GuestMemory& memory, uint64_t max_host_bytes)
              -> absl::StatusOr<std::unique_ptr<virtio::Renderer3d>> {
        auto r = virtio::VirglRenderer::Create(memory, max_host_bytes);
        if (!r.ok()) return r.status();
        std::fprintf(stderr, "kindling-gpu: %s, %u capsets\n", (*r)->info().name.c_str(),
                     (*r)->info().num_capsets);
        return std::unique_ptr<virtio::Renderer3d>(std::move(*r));
      });
  if (!s.ok()) {
    std::fprintf(stderr, "kindling-gpu: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
