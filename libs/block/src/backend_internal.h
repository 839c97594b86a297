// Internal to the backends: request checks and running a request on an Image.
#ifndef KINDLING_BLOCK_SRC_BACKEND_INTERNAL_H_
#define KINDLING_BLOCK_SRC_BACKEND_INTERNAL_H_

#include "block/backend.h"

namespace block {

// PermissionDenied for a change to a read-only image, OutOfRange outside the
// disk, InvalidArgument for more than IOV_MAX iovecs. `req.length` must be
// set (for reads and writes: the iovecs' total).
absl::Status ValidateRequest(const Image& image, const Request& req);

// Runs `req` synchronously on `image`.
absl::Status ExecuteOnImage(Image& image, const Request& req);

}  // namespace block

#endif  // KINDLING_BLOCK_SRC_BACKEND_INTERNAL_H_
