// The table of formats OpenImage knows.
#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"
#include "block/image.h"
#include "block/qcow2.h"
#include "block/qed.h"
#include "block/raw.h"
#include "block/vhd.h"

namespace block {

absl::StatusOr<std::unique_ptr<Image>> OpenImageInChainFormats(
    const std::string& path, const std::string& format,
    const OpenOptions& options, std::vector<std::string>& chain) {
  if (format == "raw") return RawImage::Open(path, options);
  if (format == "qcow2") return Qcow2Image::OpenInChain(path, options, chain);
  if (format == "qed") {
    ASSIGN_OR_RETURN(auto q, QedImage::OpenInChain(path, options, &chain));
    return std::unique_ptr<Image>(std::move(q));
  }
  if (format == "vpc" || format == "vhd") {
    ASSIGN_OR_RETURN(auto v, VhdImage::OpenInChain(path, options, &chain));
    return std::unique_ptr<Image>(std::move(v));
  }
  return absl::UnimplementedError(
      absl::StrFormat("%s: image format '%s' is not supported", path, format));
}

}  // namespace block
