// Gpu2d: the command side of virtio-gpu's 2D mode (virtio 1.2, 5.7), apart
// from any queue: one request's bytes in, the response's bytes out. The
// Gpu device feeds it what the driver puts on controlq and cursorq; a
// fuzzer or an embedder with its own transport can call it directly.
//
//   Gpu2d gpu(memory, GpuLimits{.width = 1024, .height = 768});
//   std::vector<uint8_t> resp = gpu.Execute(request_bytes);
//   absl::StatusOr<GpuImage> shot = gpu.Screenshot(0);
//
// Every number in a request is the guest's: resource sizes are bounded one
// by one and in total (GpuLimits::max_host_bytes), backing entries must lie
// in guest RAM, transfer and flush rectangles inside their resource, and
// a request shorter than its command is refused. A bad request gets the
// spec's error response (VIRTIO_GPU_RESP_ERR_*), never a crash. Resource
// pixels live in host memory; backing pages are read through GuestMemory
// on each transfer, so a guest that changes its memory map cannot make the
// device touch anything but guest RAM. Thread-safe: Screenshot may run
// while another thread executes commands.
#ifndef VIRTIO_GPU_2D_H_
#define VIRTIO_GPU_2D_H_

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "vm-memory/guest_memory.h"

namespace virtio {

struct GpuLimits {
  // Scanout 0's preferred mode, as GET_DISPLAY_INFO and the EDID give it.
  uint32_t width = 1280;
  uint32_t height = 800;
  // Host memory all resources together may take (QEMU's max_hostmem).
  uint64_t max_host_bytes = 256ull << 20;
  bool edid = true;  // whether GET_EDID is served
};

// What a scanout shows: RGB, 3 bytes a pixel, rows top to bottom.
struct GpuImage {
  uint32_t width = 0;
  uint32_t height = 0;
  std::vector<uint8_t> rgb;
};

struct GpuStats {
  uint64_t commands = 0;
  uint64_t errors = 0;     // error responses sent
  uint64_t transfers = 0;  // TRANSFER_TO_HOST_2D that succeeded
  uint64_t flushes = 0;    // RESOURCE_FLUSH that succeeded
  uint64_t resources = 0;  // alive now
  uint64_t host_bytes = 0; // their pixels, now
};

// What a snapshot keeps of the device: every resource with its pixels
// and backing entries, the scanout and the cursor.
struct GpuResourceState {
  uint32_t id = 0;
  uint32_t format = 0;
  uint32_t width = 0;
  uint32_t height = 0;
  std::vector<uint8_t> pixels;  // width * height * 4 bytes
  bool has_backing = false;
  std::vector<std::pair<uint64_t, uint32_t>> backing;  // guest address, length
};

struct GpuState {
  std::vector<GpuResourceState> resources;
  uint32_t scanout_resource = 0;  // 0: scanout 0 is off
  uint32_t scanout_x = 0, scanout_y = 0, scanout_width = 0, scanout_height = 0;
  uint32_t cursor_resource = 0;
  uint32_t cursor_x = 0, cursor_y = 0, cursor_hot_x = 0, cursor_hot_y = 0;
};

class Gpu2d {
 public:
  static constexpr uint32_t kNumScanouts = 1;
  static constexpr uint32_t kMaxDimension = 16384;   // width and height, each
  static constexpr uint32_t kMaxResources = 16384;
  static constexpr uint32_t kMaxBackingEntries = 16384;

  Gpu2d(vm_memory::GuestMemory& memory, const GpuLimits& limits);

  // Whether `format` (VIRTIO_GPU_FORMAT_*) is one a resource may have.
  static bool SupportedFormat(uint32_t format);

  // Runs one request (a header and its command, with ATTACH_BACKING's
  // entries after it) and returns the response: a header and, for the
  // commands that have one, its body.
  std::vector<uint8_t> Execute(std::span<const uint8_t> request);
  // The scanout's picture as of now; FAILED_PRECONDITION if the guest
  // has not set one, NOT_FOUND for a scanout that does not exist.
  absl::StatusOr<GpuImage> Screenshot(uint32_t scanout) const;
  // Back to no resources and no scanout (a device reset).
  void Reset();
  // For snapshots, with the device at rest (no command running).
  GpuState SaveState() const;
  // Replaces everything with `state`, checked as the requests that built
  // it would have been (ids, formats, sizes and the host-memory limit,
  // backing in guest RAM, the scanout and cursor against their
  // resources); an error names what was wrong and leaves the device empty.
  absl::Status RestoreState(GpuState state);
  GpuStats stats() const;
  const GpuLimits& limits() const { return limits_; }
  // Whether a 2D resource with this id exists (the virgl router keeps
  // one id space for 2D and 3D resources).
  bool HasResource(uint32_t id) const;

 private:
  struct Entry {
    uint64_t addr;
    uint32_t len;
  };
  struct Resource {
    uint32_t format = 0;
    uint32_t width = 0;
    uint32_t height = 0;
    std::vector<uint8_t> pixels;  // width * 4 bytes a row
    std::vector<Entry> backing;
    std::vector<uint64_t> starts;  // each entry's offset in the backing
    uint64_t backing_len = 0;
    bool has_backing = false;
  };
  struct Rect {
    uint32_t x, y, width, height;
  };
  struct Scanout {
    uint32_t resource_id = 0;  // 0: disabled
    Rect r{};
  };
  struct Cursor {
    uint32_t resource_id = 0;
    uint32_t x = 0, y = 0, hot_x = 0, hot_y = 0;
  };

  // Each returns the response type and fills `body` for the OK_* types
  // with data; `req` is the whole request.
  uint32_t Dispatch(uint32_t type, std::span<const uint8_t> req, std::vector<uint8_t>& body)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t DisplayInfo(std::vector<uint8_t>& body) const;
  uint32_t Edid(std::span<const uint8_t> req, std::vector<uint8_t>& body) const;
  uint32_t CreateResource(std::span<const uint8_t> req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t Unref(std::span<const uint8_t> req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t SetScanout(std::span<const uint8_t> req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t Flush(std::span<const uint8_t> req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t Transfer(std::span<const uint8_t> req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t AttachBacking(std::span<const uint8_t> req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t DetachBacking(std::span<const uint8_t> req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t UpdateCursor(uint32_t type, std::span<const uint8_t> req)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadState(GpuState& state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadResource(GpuResourceState& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Clear() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a backing entry is non-empty and lies in guest RAM.
  bool InGuestRam(const Entry& e) const;
  // Gives `res` these checked entries as its backing.
  static void SetBacking(Resource& res, std::vector<Entry> entries);
  // Copies `len` bytes at `offset` of the resource's backing into `out`.
  bool ReadBacking(const Resource& res, uint64_t offset, std::span<uint8_t> out) const;
  Resource* Find(uint32_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  vm_memory::GuestMemory& memory_;
  const GpuLimits limits_;
  mutable absl::Mutex mu_;
  std::map<uint32_t, Resource> resources_ ABSL_GUARDED_BY(mu_);
  std::array<Scanout, kNumScanouts> scanouts_ ABSL_GUARDED_BY(mu_);
  Cursor cursor_ ABSL_GUARDED_BY(mu_);
  GpuStats stats_ ABSL_GUARDED_BY(mu_);
};

// Converts width x height pixels of `format` (one Gpu2d::SupportedFormat;
// 4 bytes a pixel, rows `stride` bytes apart, starting at `first`) to RGB.
GpuImage PixelsToRgb(uint32_t format, const uint8_t* first, uint64_t stride, uint32_t width,
                     uint32_t height);

// A 128-byte EDID 1.4 block for one monitor whose preferred (and only
// detailed) mode is width x height at up to 60 Hz; sizes past what EDID's
// 12-bit fields hold are capped at 4095.
std::array<uint8_t, 128> BuildEdid(uint32_t width, uint32_t height);

}  // namespace virtio

#endif  // VIRTIO_GPU_2D_H_
