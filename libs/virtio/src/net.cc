#include "virtio/net.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"

namespace virtio {
namespace {

constexpr uint64_t kHdrBytes = sizeof(NetHdr);

// struct virtio_net_config up to mtu (spec 5.1.4).
struct __attribute__((packed)) NetConfig {
  uint8_t mac[6];
  uint16_t status;
  uint16_t max_virtqueue_pairs;
  uint16_t mtu;
};
static_assert(sizeof(NetConfig) == 12);

absl::Status TapError(const std::string& tap, const std::string& what, int err) {
  std::string hint;
  if (err == EPERM) hint = " (needs CAP_NET_ADMIN, or the TAP belongs to another user)";
  if (err == EBUSY) hint = " (busy: another process holds it, or it is not a TAP)";
  if (err == ENOENT || err == ENODEV) hint = " (no TUN/TAP support: is the tun module loaded?)";
  return absl::ErrnoToStatus(err, absl::StrCat("TAP ", tap, ": ", what, hint));
}

// The virtio-net features each TUN_F_* offload makes possible, and the
// offloads an acked feature set asks the TAP for.
uint64_t FeaturesFor(unsigned offloads) {
  uint64_t f = 0;
  if (!(offloads & TUN_F_CSUM)) return f;
  f |= Bit(kNetFCsum) | Bit(kNetFGuestCsum);
  if (offloads & TUN_F_TSO4) f |= Bit(kNetFGuestTso4) | Bit(kNetFHostTso4);
  if (offloads & TUN_F_TSO6) f |= Bit(kNetFGuestTso6) | Bit(kNetFHostTso6);
  if ((offloads & TUN_F_TSO_ECN) && (offloads & (TUN_F_TSO4 | TUN_F_TSO6))) {
    f |= Bit(kNetFGuestEcn) | Bit(kNetFHostEcn);
  }
  if (offloads & TUN_F_UFO) f |= Bit(kNetFGuestUfo) | Bit(kNetFHostUfo);
  return f;
}

unsigned OffloadsFor(uint64_t acked) {
  // What the TAP may hand us is what the driver can take (GUEST_*);
  // TSO and UFO need checksum offload (the kernel refuses them alone).
  if (!(acked & Bit(kNetFGuestCsum))) return 0;
  unsigned o = TUN_F_CSUM;
  if (acked & Bit(kNetFGuestTso4)) o |= TUN_F_TSO4;
  if (acked & Bit(kNetFGuestTso6)) o |= TUN_F_TSO6;
  if ((acked & Bit(kNetFGuestEcn)) && (o & (TUN_F_TSO4 | TUN_F_TSO6))) o |= TUN_F_TSO_ECN;
  if (acked & Bit(kNetFGuestUfo)) o |= TUN_F_UFO;
  return o;
}

}  // namespace

absl::StatusOr<Tap> OpenTap(std::string_view name_view) {
  const std::string name(name_view);
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError(
        absl::StrCat("TAP name \"", name, "\" must have 1 to ", IFNAMSIZ - 1, " characters"));
  }
  Tap tap;
  tap.fd.reset(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!tap.fd.valid()) return TapError(name, "open /dev/net/tun", errno);
  ifreq ifr = {};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (::ioctl(tap.fd.get(), TUNSETIFF, &ifr) < 0) return TapError(name, "TUNSETIFF", errno);
  tap.name.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
  int hdr = kHdrBytes;
  if (::ioctl(tap.fd.get(), TUNSETVNETHDRSZ, &hdr) < 0) {
    return TapError(tap.name, "TUNSETVNETHDRSZ 12", errno);
  }
  // The richest offload set this kernel accepts, then none until a
  // driver acks features.
  const unsigned kTry[] = {
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO,
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
      TUN_F_CSUM,
  };
  for (unsigned o : kTry) {
    if (::ioctl(tap.fd.get(), TUNSETOFFLOAD, static_cast<unsigned long>(o)) == 0) {
      tap.offloads = o;
      break;
    }
  }
  if (::ioctl(tap.fd.get(), TUNSETOFFLOAD, 0UL) < 0) {
    return TapError(tap.name, "TUNSETOFFLOAD 0", errno);
  }
  return tap;
}

Net::Net(EventLoop& loop, Tap tap, NetOptions options)
    : loop_(loop),
      tap_(std::move(tap.fd)),
      tap_name_(std::move(tap.name)),
      overflow_(kHdrBytes + kMaxFrame) {
  if (options.mac) {
    mac_ = *options.mac;
  } else {
    if (::getrandom(mac_.data(), mac_.size(), 0) != static_cast<ssize_t>(mac_.size())) {
      mac_ = {0, 0x4b, 0x4e, 0x44, 0x4c, 0x01};  // "KNDL" if getrandom fails
    }
    mac_[0] = (mac_[0] & 0xfe) | 0x02;  // unicast, locally administered
  }
  features_ = Bit(kNetFMac) | Bit(kNetFStatus) | FeaturesFor(tap.offloads);
}

Net::~Net() {
  if (!rx_watch_) return;
  // The watch belongs to the loop thread.
  if (loop_.InLoopThread() || loop_.stopped()) {
    rx_watch_.reset();
  } else {
    loop_.RunSync([this] { rx_watch_.reset(); });
  }
}

void Net::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  NetConfig c = {};
  std::memcpy(c.mac, mac_.data(), 6);
  c.status = kNetSLinkUp;
  c.max_virtqueue_pairs = 1;
  CopyConfig({reinterpret_cast<const uint8_t*>(&c), sizeof(c)}, offset, data);
}

NetStats Net::stats() const {
  return {rx_frames_.load(), rx_bytes_.load(), rx_dropped_.load(),
          tx_frames_.load(), tx_bytes_.load(), tx_dropped_.load()};
}

std::vector<std::pair<std::string, uint64_t>> Net::Counters() const {
  NetStats s = stats();
  return {{"rx_frames", s.rx_frames}, {"rx_bytes", s.rx_bytes}, {"rx_dropped", s.rx_dropped},
          {"tx_frames", s.tx_frames}, {"tx_bytes", s.tx_bytes}, {"tx_dropped", s.tx_dropped}};
}

absl::Status Net::SetTapOffloads(unsigned offloads) {
  if (offloads == tap_offloads_.load()) return absl::OkStatus();  // OpenTap left them off
  if (::ioctl(tap_.get(), TUNSETOFFLOAD, static_cast<unsigned long>(offloads)) < 0) {
    return TapError(tap_name_, absl::StrFormat("TUNSETOFFLOAD %#x", offloads), errno);
  }
  tap_offloads_.store(offloads);
  return absl::OkStatus();
}

absl::Status Net::Activate(const ActivateContext& ctx) {
  ctx_ = ctx;
  RETURN_IF_ERROR(SetTapOffloads(OffloadsFor(ctx.features & features_)));
  if (!rx_watch_) {
    // A frame arrived for the buffer we hold: serve it like a driver
    // notification, so an error found meanwhile (a broken ring) puts the
    // device into needs-reset through the transport.
    rx_watch_ =
        std::make_unique<FdWatch>(loop_, tap_.get(), [this] { ctx_.process_again(kRxQueue); });
  }
  active_ = true;
  RETURN_IF_ERROR(Transmit());
  return Receive();
}

void Net::Reset() {
  rx_watch_.reset();
  rx_chain_.reset();
  active_ = false;
  ctx_ = {};
  (void)SetTapOffloads(0);
}

absl::Status Net::ProcessQueue(uint16_t index) {
  if (!active_) return absl::OkStatus();
  if (index == kTxQueue) return Transmit();
  if (index == kRxQueue) return Receive();
  return absl::OkStatus();
}

absl::Status Net::Transmit() {
  return ServeQueue(ctx_, kTxQueue,
                    [this](const DescriptorChain& chain) -> absl::StatusOr<uint32_t> {
                      RETURN_IF_ERROR(TransmitFrame(chain));
                      return 0;
                    });
}

absl::Status Net::TransmitFrame(const DescriptorChain& chain) {
  if (chain.readable_bytes < kHdrBytes || chain.readable_bytes > kHdrBytes + kMaxFrame) {
    return absl::InvalidArgumentError(
        absl::StrCat("tx chain ", chain.head, " carries ", chain.readable_bytes,
                     " bytes; a frame is the 12-byte header plus at most ", kMaxFrame, " bytes"));
  }
  ChainReader r(*ctx_.memory, chain);
  ASSIGN_OR_RETURN(std::vector<iovec> iov, r.TakeIovecs(chain.readable_bytes));
  if (iov.size() > IOV_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("tx chain ", chain.head, " has ", iov.size(), " pieces"));
  }
  ssize_t n;
  do {
    n = ::writev(tap_.get(), iov.data(), static_cast<int>(iov.size()));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    // The TAP refused the frame (bad vnet header, interface down, ...):
    // the guest's loss, counted, like a cable that drops a frame.
    tx_dropped_.fetch_add(1);
  } else {
    tx_frames_.fetch_add(1);
    tx_bytes_.fetch_add(chain.readable_bytes - kHdrBytes);
  }
  return absl::OkStatus();
}

absl::Status Net::Receive() {
  if (!active_) return absl::OkStatus();
  Queue& q = ctx_.queues[kRxQueue];
  if (!q.active()) return absl::OkStatus();
  bool used = false;
  for (uint32_t served = 0;; ++served) {
    if (served == q.size()) {
      ctx_.process_again(kRxQueue);
      break;
    }
    if (!rx_chain_) {
      ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, q.Pop());
      if (!chain) {
        // No buffer: leave frames in the TAP until the driver notifies.
        ASSIGN_OR_RETURN(bool more, q.EnableNotification(true));
        if (more) continue;
        break;
      }
      if (chain->writable_bytes < kHdrBytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("rx chain ", chain->head, " has ", chain->writable_bytes,
                         " writable bytes, less than the 12-byte virtio-net header"));
      }
      rx_chain_ = std::move(chain);
    }
    ChainWriter w(*ctx_.memory, *rx_chain_);
    uint64_t cap = std::min<uint64_t>(w.remaining(), kHdrBytes + kMaxFrame);
    ASSIGN_OR_RETURN(std::vector<iovec> iov, w.TakeIovecs(cap));
    if (cap < kHdrBytes + kMaxFrame) {
      iov.push_back({overflow_.data(), kHdrBytes + kMaxFrame - cap});
    }
    if (iov.size() > IOV_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat("rx chain ", rx_chain_->head, " has ", iov.size(), " pieces"));
    }
    ssize_t n;
    do {
      n = ::readv(tap_.get(), iov.data(), static_cast<int>(iov.size()));
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN) {
        rx_watch_->Arm();  // we hold a buffer: wake up for the next frame
      } else {
        absl::FPrintF(stderr, "kindling: %s: reading the TAP: %s; rx stopped until reset\n", name(),
                      strerror(errno));
      }
      break;
    }
    if (static_cast<uint64_t>(n) > cap || static_cast<uint64_t>(n) < kHdrBytes) {
      rx_dropped_.fetch_add(1);  // larger than the guest's buffer: kept for the next
      continue;
    }
    // One buffer per frame: num_buffers is 1 (the TAP leaves it alone).
    ChainWriter hw(*ctx_.memory, *rx_chain_);
    RETURN_IF_ERROR(hw.TakeIovecs(offsetof(NetHdr, num_buffers)).status());
    RETURN_IF_ERROR(hw.WriteObj<uint16_t>(1));
    RETURN_IF_ERROR(q.PushUsed(rx_chain_->head, static_cast<uint32_t>(n)));
    rx_chain_.reset();
    rx_frames_.fetch_add(1);
    rx_bytes_.fetch_add(n - kHdrBytes);
    used = true;
  }
  if (used && q.NeedsInterrupt()) ctx_.interrupt->SignalQueue(kRxQueue);
  return absl::OkStatus();
}

}  // namespace virtio
