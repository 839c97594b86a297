#include "migration/migration_control.h"

#include <sys/socket.h>

namespace migration {

void MigrationControl::SetBandwidth(uint64_t bytes_per_s) {
  absl::MutexLock l(&mu_);
  s_.bandwidth = bytes_per_s;
}

void MigrationControl::SetMaxDowntime(absl::Duration limit) {
  absl::MutexLock l(&mu_);
  s_.max_downtime = limit;
}

absl::Status MigrationControl::StartPostcopy() {
  absl::MutexLock l(&mu_);
  if (stage_ == Stage::kIdle) return absl::FailedPreconditionError("no migration is running");
  if (!postcopy_mode_) {
    return absl::FailedPreconditionError(
        "the migration is not a post-copy one (its mode is fixed when it starts)");
  }
  if (stage_ != Stage::kPrecopy) {
    return absl::FailedPreconditionError("the migration is already switching over");
  }
  s_.postcopy_now = true;
  return absl::OkStatus();
}

absl::Status MigrationControl::Cancel() {
  absl::MutexLock l(&mu_);
  if (stage_ == Stage::kIdle) return absl::FailedPreconditionError("no migration is running");
  if (stage_ == Stage::kCommitted) {
    return absl::FailedPreconditionError(
        "too late to cancel: the destination already runs the guest");
  }
  s_.cancelled = true;
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RD);  // a read waiting for the peer ends now
  return absl::OkStatus();
}

MigrationControl::Snapshot MigrationControl::Read() const {
  absl::MutexLock l(&mu_);
  return s_;
}

bool MigrationControl::cancelled() const {
  absl::MutexLock l(&mu_);
  return s_.cancelled;
}

void MigrationControl::Attach(bool postcopy_mode, int fd) {
  absl::MutexLock l(&mu_);
  stage_ = Stage::kPrecopy;
  postcopy_mode_ = postcopy_mode;
  fd_ = fd;
  s_.postcopy_now = false;
  s_.cancelled = false;
}

void MigrationControl::Switching() {
  absl::MutexLock l(&mu_);
  if (stage_ == Stage::kPrecopy) stage_ = Stage::kSwitching;
}

bool MigrationControl::Commit() {
  absl::MutexLock l(&mu_);
  if (s_.cancelled) return false;
  stage_ = Stage::kCommitted;
  return true;
}

void MigrationControl::Detach() {
  absl::MutexLock l(&mu_);
  stage_ = Stage::kIdle;
  fd_ = -1;
  s_.postcopy_now = false;
  s_.cancelled = false;
}

}  // namespace migration
