// qcow2 internal snapshots: create, list, apply, delete.
#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"
#include "libs/block/src/qcow2_image.h"

namespace block::qcow2 {

absl::StatusOr<std::vector<Qcow2SnapshotInfo>> Qcow2::ListSnapshots() {
  return info().snapshots;
}

absl::Status Qcow2::CreateSnapshot(const std::string&) {
  return absl::UnimplementedError("qcow2 snapshot create is not implemented yet");
}
absl::Status Qcow2::ApplySnapshot(const std::string&) {
  return absl::UnimplementedError("qcow2 snapshot apply is not implemented yet");
}
absl::Status Qcow2::DeleteSnapshot(const std::string&) {
  return absl::UnimplementedError("qcow2 snapshot delete is not implemented yet");
}

}  // namespace block::qcow2
