// Request constructors and the blocking SyncBackend.
#include <future>

#include "block/backend.h"

namespace block {

Request Request::Read(uint64_t offset, void* buf, size_t len) {
  return ReadV(offset, {{buf, len}});
}
Request Request::Write(uint64_t offset, const void* buf, size_t len) {
  return WriteV(offset, {{const_cast<void*>(buf), len}});
}
Request Request::ReadV(uint64_t offset, std::vector<iovec> iov) {
  Request r;
  r.type = RequestType::kRead;
  r.offset = offset;
  r.length = IovLength(iov);
  r.iov = std::move(iov);
  return r;
}
Request Request::WriteV(uint64_t offset, std::vector<iovec> iov) {
  Request r = ReadV(offset, std::move(iov));
  r.type = RequestType::kWrite;
  return r;
}
std::optional<absl::Status> BlockBackend::TryWithoutBlocking(const Request& req) {
  (void)req;
  return std::nullopt;
}

Request Request::Flush() {
  Request r;
  r.type = RequestType::kFlush;
  return r;
}
Request Request::Discard(uint64_t offset, uint64_t len) {
  Request r;
  r.type = RequestType::kDiscard;
  r.offset = offset;
  r.length = len;
  return r;
}
Request Request::WriteZeroes(uint64_t offset, uint64_t len) {
  Request r = Discard(offset, len);
  r.type = RequestType::kWriteZeroes;
  return r;
}

absl::Status SyncBackend::Run(Request req) {
  std::promise<absl::Status> p;
  auto f = p.get_future();
  backend_.Submit(std::move(req), [&p](absl::Status s) { p.set_value(std::move(s)); });
  return f.get();
}
absl::Status SyncBackend::Read(uint64_t offset, void* buf, size_t len) {
  return Run(Request::Read(offset, buf, len));
}
absl::Status SyncBackend::Write(uint64_t offset, const void* buf, size_t len) {
  return Run(Request::Write(offset, buf, len));
}
absl::Status SyncBackend::Flush() { return Run(Request::Flush()); }
absl::Status SyncBackend::Discard(uint64_t offset, uint64_t len) {
  return Run(Request::Discard(offset, len));
}
absl::Status SyncBackend::WriteZeroes(uint64_t offset, uint64_t len) {
  return Run(Request::WriteZeroes(offset, len));
}

}  // namespace block
