// NBD client: a disk served by qemu-nbd, nbdkit or any NBD server.
//
// Fixed newstyle handshake with NBD_OPT_GO (falling back to
// NBD_OPT_EXPORT_NAME), structured replies when the server offers them
// (simple replies otherwise), read/write/flush/trim/write-zeroes. Every
// length and offset the server sends is bounded; a server that goes quiet
// for `timeout_s` while requests are outstanding gets an error, not a hang.
// Calls from several threads are pipelined: each request goes out with its
// own cookie and a reader thread hands every reply to the caller waiting
// for it.
//
// Addresses: nbd+unix:///EXPORT?socket=PATH, nbd://HOST[:PORT]/EXPORT,
// and qemu's nbd:unix:PATH[:exportname=EXPORT], nbd:HOST:PORT[:exportname=...].
//
//   ASSIGN_OR_RETURN(auto disk, block::NbdImage::Connect(
//       "nbd+unix:///disk?socket=/run/nbd.sock", {}));
//   RETURN_IF_ERROR(disk->Read(0, buf, 4096));
#ifndef KINDLING_BLOCK_NBD_H_
#define KINDLING_BLOCK_NBD_H_

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "block/image.h"

namespace block {

struct NbdOptions {
  bool read_only = false;
  int timeout_s = 30;
  bool structured_replies = true;  // ask for them
};

class NbdImage : public Image {
 public:
  static absl::StatusOr<std::unique_ptr<NbdImage>> Connect(const std::string& address,
                                                           const NbdOptions& options);
  // Runs the handshake on an already connected socket (takes ownership).
  static absl::StatusOr<std::unique_ptr<NbdImage>> FromSocket(int fd, const std::string& name,
                                                              const std::string& export_name,
                                                              const NbdOptions& options);
  ~NbdImage() override;

  std::string_view format() const override { return "nbd"; }
  uint64_t size() const override { return size_; }
  Capabilities capabilities() const override;
  absl::Status ReadV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status WriteV(uint64_t offset, std::span<const iovec> iov) override;
  absl::Status Flush() override;
  absl::Status Discard(uint64_t offset, uint64_t len) override;
  absl::Status WriteZeroes(uint64_t offset, uint64_t len) override;

  bool structured() const { return structured_; }
  uint16_t transmission_flags() const { return flags_; }

 private:
  struct Pending {
    uint16_t type;
    uint64_t offset, len;
    std::span<const iovec> read_into;
    bool done = false;
    absl::Status status;
  };

  NbdImage(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  absl::Status Handshake(const std::string& export_name, const NbdOptions& o);
  absl::Status Command(uint16_t type, uint64_t offset, uint64_t len,
                       std::span<const iovec> data, std::span<const iovec> read_into);
  absl::Status SendAll(const void* p, size_t n);
  absl::Status SendV(std::span<const iovec> iov);
  absl::Status RecvAll(void* p, size_t n);
  void Reader();
  absl::Status ReadReply();  // one reply or chunk
  void FailAll(absl::Status s);
  absl::Status ReplyError(const Pending& p, uint32_t err, const std::string& msg) const;

  int fd_;
  std::string name_;
  int timeout_s_ = 30;
  std::mutex send_mu_;  // one request being written at a time
  std::mutex mu_;       // pending_, broken_
  std::condition_variable cv_;
  std::map<uint64_t, Pending*> pending_;
  std::thread reader_;
  bool stopping_ = false;
  uint64_t size_ = 0;
  uint16_t flags_ = 0;
  bool structured_ = false;
  bool read_only_ = false;
  bool broken_ = false;
  absl::Status broken_status_;
  uint64_t cookie_ = 0;
  uint32_t max_request_ = 32 << 20;
};

}  // namespace block

#endif  // KINDLING_BLOCK_NBD_H_
