// Internal to the backends: request checks and running a request on an Image.
#ifndef KINDLING_BLOCK_SRC_BACKEND_INTERNAL_H_
#define KINDLING_BLOCK_SRC_BACKEND_INTERNAL_H_

#include <atomic>
#include <optional>

#include "block/backend.h"

namespace block {

// PermissionDenied for a change to a read-only image, OutOfRange outside the
// disk, InvalidArgument for more than IOV_MAX iovecs. `req.length` must be
// set (for reads and writes: the iovecs' total).
absl::Status ValidateRequest(const Image& image, const Request& req);

// Whether RWF_NOWAIT works, per direction; cleared for good once the file
// system refuses it (EOPNOTSUPP).
struct NoWaitSupport {
  std::atomic<bool> reads{true};
  std::atomic<bool> writes{true};
};

// TryWithoutBlocking over `image`.
std::optional<absl::Status> TryImageWithoutBlocking(Image& image, const Request& req,
                                                    NoWaitSupport& nowait);

}  // namespace block

#endif  // KINDLING_BLOCK_SRC_BACKEND_INTERNAL_H_
