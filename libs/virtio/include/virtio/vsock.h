// Vsock: virtio-vsock (virtio 1.2, 5.10) stream sockets, bridged to Unix
// sockets on the host the way Firecracker does it (docs/vsock.md there):
//
//  - host -> guest: the device listens on `uds_path`. A host process
//    connects and writes `CONNECT <port>\n` (decimal guest port). The
//    device sends OP_REQUEST to that guest port from a fresh host-side
//    port (CID 2); when the guest answers OP_RESPONSE it writes
//    `OK <host_port>\n` to the Unix socket, and from then on bytes flow
//    both ways. If the guest refuses (OP_RST) or the line is malformed,
//    the Unix socket is closed.
//  - guest -> host: a guest connection to CID 2 port P connects to the
//    Unix socket `<uds_path>_<P>`; if nobody listens there the guest gets
//    OP_RST, otherwise OP_RESPONSE and the bytes flow.
//
//   ASSIGN_OR_RETURN(auto vsock, Vsock::Create(loop, {.guest_cid = 3,
//                                                     .uds_path = "/run/vm/v.sock"}));
//   ... MmioTransport(vsock, mem, loop, irq) ...
//
// Everything runs on the device's EventLoop with Boost.Asio Unix sockets.
// Flow control is virtio's credit scheme both ways: the device advertises
// kBufAlloc bytes per connection and RSTs a connection whose guest sends
// beyond that; it sends the guest no more than the guest's own
// buf_alloc - (tx_cnt - fwd_cnt), and reads a host socket only when the
// previous chunk was delivered, so per connection the VMM holds at most
// kBufAlloc + kReadChunk bytes, with at most max_connections connections.
//
// Guest faults, per packet: a packet that is shorter than its 44-byte
// header, or whose `len` runs past the buffers it came in, is a broken
// request: ProcessQueue returns an error and the transport sets
// DEVICE_NEEDS_RESET. Everything else wrong — a source CID other than the
// guest's, a destination other than the host (CID 2), a type other than
// STREAM, an unknown op, a packet for no connection, data beyond the
// advertised credit or before the handshake — gets an OP_RST reply (and
// ends the connection it names), never a reply to an OP_RST.
#ifndef VIRTIO_VSOCK_H_
#define VIRTIO_VSOCK_H_

#include <atomic>
#include <boost/asio/local/stream_protocol.hpp>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "virtio/device.h"
#include "virtio/event_loop.h"

namespace virtio {

// struct virtio_vsock_hdr (spec 5.10.6), little-endian, packed.
struct __attribute__((packed)) VsockHdr {
  uint64_t src_cid;
  uint64_t dst_cid;
  uint32_t src_port;
  uint32_t dst_port;
  uint32_t len;
  uint16_t type;
  uint16_t op;
  uint32_t flags;
  uint32_t buf_alloc;
  uint32_t fwd_cnt;
};
static_assert(sizeof(VsockHdr) == 44);

inline constexpr uint64_t kVsockHostCid = 2;
inline constexpr uint16_t kVsockTypeStream = 1;
inline constexpr uint16_t kVsockOpRequest = 1;
inline constexpr uint16_t kVsockOpResponse = 2;
inline constexpr uint16_t kVsockOpRst = 3;
inline constexpr uint16_t kVsockOpShutdown = 4;
inline constexpr uint16_t kVsockOpRw = 5;
inline constexpr uint16_t kVsockOpCreditUpdate = 6;
inline constexpr uint16_t kVsockOpCreditRequest = 7;
inline constexpr uint32_t kVsockShutdownRcv = 1;
inline constexpr uint32_t kVsockShutdownSend = 2;

struct VsockOptions {
  uint64_t guest_cid = 3;  // 3 .. 2^32-2
  std::string uds_path;    // created (a stale file there is replaced)
  uint32_t max_connections = 1024;
};

class Vsock : public VirtioDevice {
 public:
  static constexpr uint16_t kRxQueue = 0;
  static constexpr uint16_t kTxQueue = 1;
  static constexpr uint16_t kEventQueue = 2;
  static constexpr uint32_t kBufAlloc = 64 * 1024;   // per connection, guest -> host
  static constexpr uint32_t kReadChunk = 32 * 1024;  // per connection, host -> guest
  static constexpr size_t kMaxLineBytes = 64;        // the CONNECT line

  // Binds and listens on options.uds_path; `loop` is the loop the
  // transport runs this device on. Destroy the device before the loop.
  static absl::StatusOr<std::shared_ptr<Vsock>> Create(EventLoop& loop, VsockOptions options);
  ~Vsock() override;

  DeviceType type() const override { return DeviceType::kVsock; }
  std::string name() const override { return "virtio-vsock " + options_.uds_path; }
  uint64_t features() const override { return 0; }
  uint16_t num_queues() const override { return 3; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  absl::Status Activate(const ActivateContext& ctx) override;
  absl::Status ProcessQueue(uint16_t index) override;
  void Reset() override;
  // A snapshot does not carry connections (they are host sockets): after a
  // restore the driver gets VIRTIO_VSOCK_EVENT_TRANSPORT_RESET and drops
  // its own, as Firecracker does; listening sockets stay.
  absl::Status Restored() override;

  // Open connections (handshakes included); any thread.
  size_t connections() const { return connections_.load(); }

 private:
  struct Conn;
  using Key = std::pair<uint32_t, uint32_t>;  // host port, guest port
  struct Control {
    uint16_t op;
    Key key;
    uint32_t flags;
  };

  Vsock(EventLoop& loop, VsockOptions options);
  void Accept();
  void OnConnectLine(const std::shared_ptr<Conn>& c, const boost::system::error_code& ec, size_t n);
  absl::Status Transmit();
  absl::Status Receive();
  absl::Status HandlePacket(const VsockHdr& h, ChainReader& payload);
  void ConnectToHost(const VsockHdr& h);
  void StartRead(const std::shared_ptr<Conn>& c);
  void StartWrite(const std::shared_ptr<Conn>& c);
  void OnWritten(const std::shared_ptr<Conn>& c);
  void Established(const std::shared_ptr<Conn>& c);
  void MarkReady(const std::shared_ptr<Conn>& c);
  void SendControl(uint16_t op, Key key, uint32_t flags = 0);
  void Rst(Key key);  // RST to the guest and close the connection, if any
  void Close(const std::shared_ptr<Conn>& c);
  void CloseAll();
  void Kick();  // packets wait for the rx queue
  void UpdateCount();
  std::shared_ptr<Conn> Find(Key key);

  EventLoop& loop_;
  VsockOptions options_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  ActivateContext ctx_;  // loop thread, like everything below
  bool active_ = false;
  bool tx_blocked_ = false;  // too many replies waiting for rx buffers
  std::map<Key, std::shared_ptr<Conn>> conns_;
  std::map<Conn*, std::shared_ptr<Conn>> handshakes_;  // no CONNECT line yet
  std::deque<Control> control_;
  std::deque<Key> ready_;  // connections with data for the guest
  uint32_t next_port_ = 1u << 30;
  std::atomic<size_t> connections_{0};
};

}  // namespace virtio

#endif  // VIRTIO_VSOCK_H_
