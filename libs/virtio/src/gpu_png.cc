#include "virtio/gpu_png.h"

#include <png.h>

#include "absl/strings/str_cat.h"

namespace virtio {

absl::StatusOr<std::string> EncodePng(const GpuImage& image) {
  if (image.width == 0 || image.height == 0 ||
      image.rgb.size() != uint64_t{image.width} * image.height * 3) {
    return absl::InvalidArgumentError(absl::StrCat("a ", image.width, "x", image.height,
                                                   " image with ", image.rgb.size(),
                                                   " bytes of RGB"));
  }
  png_image p{};
  p.version = PNG_IMAGE_VERSION;
  p.width = image.width;
  p.height = image.height;
  p.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  // First the size, then the bytes.
  if (!png_image_write_to_memory(&p, nullptr, &size, 0, image.rgb.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("libpng: ", p.message));
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&p, out.data(), &size, 0, image.rgb.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("libpng: ", p.message));
  }
  out.resize(size);
  return out;
}

absl::StatusOr<GpuImage> DecodePng(std::string_view png, uint64_t max_pixels) {
  png_image p{};
  p.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&p, png.data(), png.size())) {
    return absl::InvalidArgumentError(absl::StrCat("not a PNG libpng reads: ", p.message));
  }
  if (uint64_t{p.width} * p.height > max_pixels) {
    png_image_free(&p);
    return absl::ResourceExhaustedError(
        absl::StrCat("a ", p.width, "x", p.height, " PNG: more than ", max_pixels, " pixels"));
  }
  p.format = PNG_FORMAT_RGB;
  GpuImage img{p.width, p.height, {}};
  img.rgb.resize(PNG_IMAGE_SIZE(p));
  if (!png_image_finish_read(&p, nullptr, img.rgb.data(), 0, nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("a broken PNG: ", p.message));
  }
  return img;
}

}  // namespace virtio
