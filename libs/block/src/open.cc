// Format probing, image opening with backing chains, backend selection.
#include <stdlib.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "block/backend.h"
#include "block/file.h"
#include "block/nbd.h"
#include "block/raw.h"
#include "kindling/status_macros.h"

namespace block {

absl::StatusOr<std::string> ProbeFormat(const std::string& path) {
  ASSIGN_OR_RETURN(File f, File::Open(path, {.read_only = true}));
  char magic[8] = {};
  RETURN_IF_ERROR(f.PRead(magic, sizeof magic, 0));
  if (memcmp(magic, "QFI\xfb", 4) == 0) return std::string("qcow2");
  if (memcmp(magic, "QED\0", 4) == 0) return std::string("qed");
  if (memcmp(magic, "conectix", 8) == 0) return std::string("vpc");
  ASSIGN_OR_RETURN(uint64_t size, f.Size());
  if (size >= 512) {
    RETURN_IF_ERROR(f.PRead(magic, sizeof magic, size - 512));
    if (memcmp(magic, "conectix", 8) == 0) return std::string("vpc");
  }
  return std::string("raw");
}

absl::StatusOr<std::unique_ptr<Image>> OpenImage(const std::string& path,
                                                 const OpenOptions& options) {
  std::vector<std::string> chain;
  return OpenImageInChain(path, options, chain);
}

absl::StatusOr<std::unique_ptr<Image>> OpenImageInChainFormats(
    const std::string& path, const std::string& format,
    const OpenOptions& options, std::vector<std::string>& chain);

absl::StatusOr<std::unique_ptr<Image>> OpenImageInChain(
    const std::string& path, const OpenOptions& options,
    std::vector<std::string>& chain) {
  if (path.rfind("nbd:", 0) == 0 || path.rfind("nbd+", 0) == 0) {
    if (std::find(chain.begin(), chain.end(), path) != chain.end()) {
      return absl::FailedPreconditionError("backing chain loop at " + path);
    }
    ASSIGN_OR_RETURN(auto n, NbdImage::Connect(path, {.read_only = options.read_only}));
    return std::unique_ptr<Image>(std::move(n));
  }
  char* real = ::realpath(path.c_str(), nullptr);
  if (real == nullptr) {
    return absl::NotFoundError(absl::StrFormat(
        "%s: %s%s", path, strerror(errno),
        chain.empty() ? "" : absl::StrFormat(" (backing file of %s)", chain.back())));
  }
  std::string canonical(real);
  free(real);
  if (std::find(chain.begin(), chain.end(), canonical) != chain.end()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "backing chain loop: %s is its own backing file (via %s)", canonical,
        chain.back()));
  }
  if (static_cast<int>(chain.size()) > options.max_backing_depth) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "backing chain of %s is deeper than %d images", chain.front(),
        options.max_backing_depth));
  }
  std::string format = options.format;
  if (format.empty()) {
    ASSIGN_OR_RETURN(format, ProbeFormat(path));
  }
  chain.push_back(canonical);
  auto img = OpenImageInChainFormats(path, format, options, chain);
  chain.pop_back();
  return img;
}

absl::StatusOr<std::unique_ptr<BlockBackend>> OpenBackend(
    const std::string& path, const BackendOptions& options) {
  std::string format = options.open.format;
  if (path.rfind("nbd:", 0) == 0 || path.rfind("nbd+", 0) == 0) format = "nbd";
  if (format.empty()) {
    ASSIGN_OR_RETURN(format, ProbeFormat(path));
  }
  const bool uring = format != "nbd" && options.engine != Engine::kThreads &&
                     (options.engine == Engine::kIoUring || IoUringAvailable());
  if (uring && !IoUringAvailable()) {
    return absl::FailedPreconditionError("io_uring is not available here");
  }
  OpenOptions open = options.open;
  open.format = format;
  ASSIGN_OR_RETURN(auto image, OpenImage(path, open));
  if (uring) return CreateUringBackend(std::move(image), options);
  return CreateThreadPoolBackend(std::move(image), options.threads);
}

}  // namespace block
