// Net: virtio-net (virtio 1.2, 5.1) over a Linux TAP device, one rx/tx
// queue pair, no control queue.
//
// TX: each chain's device-readable bytes (a 12-byte virtio_net_hdr_v1,
// then the frame) are written to the TAP with one writev, straight from
// guest memory; the TAP takes the header as its vnet header, so checksum
// and segmentation offloads pass through. RX: the TAP fd is watched on the
// device's loop only while the guest has an rx buffer; each frame is read
// with one readv straight into the chain. When the guest has no buffer the
// device stops reading, so frames wait in the TAP's queue (where the
// kernel applies its own txqueuelen limit) and nothing spins.
//
//   ASSIGN_OR_RETURN(Tap tap, OpenTap("tap0"));
//   auto net = std::make_shared<Net>(loop, std::move(tap), NetOptions{});
//   ... MmioTransport(net, mem, loop, irq) ...
//   NetStats s = net->stats();
//
// Guest faults: a tx chain shorter than the header or longer than
// kMaxFrame + header, or an rx chain that cannot hold the header, is a
// broken driver: ProcessQueue returns an error and the transport sets
// DEVICE_NEEDS_RESET. A frame the TAP refuses (e.g. a bad GSO header) is
// dropped and counted in tx_dropped; an incoming frame larger than the
// guest's rx buffer is dropped and counted in rx_dropped (the buffer is
// kept for the next frame).
#ifndef VIRTIO_NET_H_
#define VIRTIO_NET_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/device.h"
#include "virtio/event_loop.h"
#include "vm-memory/unique_fd.h"

namespace virtio {

// Feature bits (spec 5.1.3).
inline constexpr int kNetFCsum = 0;
inline constexpr int kNetFGuestCsum = 1;
inline constexpr int kNetFMac = 5;
inline constexpr int kNetFGuestTso4 = 7;
inline constexpr int kNetFGuestTso6 = 8;
inline constexpr int kNetFGuestEcn = 9;
inline constexpr int kNetFGuestUfo = 10;
inline constexpr int kNetFHostTso4 = 11;
inline constexpr int kNetFHostTso6 = 12;
inline constexpr int kNetFHostEcn = 13;
inline constexpr int kNetFHostUfo = 14;
inline constexpr int kNetFMrgRxbuf = 15;
inline constexpr int kNetFStatus = 16;
inline constexpr uint16_t kNetSLinkUp = 1;

// struct virtio_net_hdr_v1 (spec 5.1.6): 12 bytes with VERSION_1.
struct NetHdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};
static_assert(sizeof(NetHdr) == 12);

// An open TAP queue: the fd, the interface's real name (the kernel fills
// in patterns such as "tap%d"), and the TUN_F_* offloads the TAP accepted
// when probed.
struct Tap {
  vm_memory::UniqueFd fd;
  std::string name;
  unsigned offloads = 0;
};

// Opens (or creates) TAP `name` with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
// a 12-byte vnet header, non-blocking, and probes TUNSETOFFLOAD (then
// turns offloads off until a driver acks them). Errors name the TAP and
// the errno, e.g. PermissionDenied without CAP_NET_ADMIN, or busy when
// another process holds the interface.
absl::StatusOr<Tap> OpenTap(std::string_view name);

struct NetOptions {
  // The guest's MAC; a random locally administered unicast one if unset.
  std::optional<std::array<uint8_t, 6>> mac;
};

struct NetStats {
  uint64_t rx_frames = 0, rx_bytes = 0, rx_dropped = 0;
  uint64_t tx_frames = 0, tx_bytes = 0, tx_dropped = 0;
};

class Net : public VirtioDevice {
 public:
  static constexpr uint16_t kRxQueue = 0;
  static constexpr uint16_t kTxQueue = 1;
  // The largest frame without the header: 64 KiB of GSO payload plus
  // Ethernet and VLAN headers (what Linux's virtio-net may send).
  static constexpr uint32_t kMaxFrame = 65562;

  // `loop` is the loop the transport runs this device on; destroy the
  // device before the loop.
  Net(EventLoop& loop, Tap tap, NetOptions options);
  ~Net() override;

  DeviceType type() const override { return DeviceType::kNet; }
  std::string name() const override { return "virtio-net " + tap_name_; }
  uint64_t features() const override { return features_; }
  uint16_t num_queues() const override { return 2; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  absl::Status Activate(const ActivateContext& ctx) override;
  absl::Status ProcessQueue(uint16_t index) override;
  void Reset() override;

  const std::array<uint8_t, 6>& mac() const { return mac_; }
  // From any thread.
  NetStats stats() const;
  // The same as stats(): rx_frames, rx_bytes, rx_dropped, tx_frames, ...
  std::vector<std::pair<std::string, uint64_t>> Counters() const override;
  // The TUN_F_* offloads currently set on the TAP (what the driver acked).
  unsigned tap_offloads() const { return tap_offloads_.load(); }

 private:
  absl::Status Transmit();
  absl::Status TransmitFrame(const DescriptorChain& chain);  // one tx chain
  absl::Status Receive();
  absl::Status SetTapOffloads(unsigned offloads);

  EventLoop& loop_;
  vm_memory::UniqueFd tap_;
  std::string tap_name_;
  std::array<uint8_t, 6> mac_;
  uint64_t features_ = 0;
  ActivateContext ctx_;
  bool active_ = false;                      // loop thread
  std::optional<DescriptorChain> rx_chain_;  // popped, waiting for a frame
  std::unique_ptr<FdWatch> rx_watch_;        // loop thread
  std::vector<uint8_t> overflow_;            // catches frames too big for a chain
  std::atomic<unsigned> tap_offloads_{0};
  std::atomic<uint64_t> rx_frames_{0}, rx_bytes_{0}, rx_dropped_{0};
  std::atomic<uint64_t> tx_frames_{0}, tx_bytes_{0}, tx_dropped_{0};
};

}  // namespace virtio

#endif  // VIRTIO_NET_H_
