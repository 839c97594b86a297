#include "virtio/vsock.h"

#include <unistd.h>

#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kindling/status_macros.h"

namespace virtio {

using boost::asio::local::stream_protocol;

struct Vsock::Conn {
  enum class State { kHandshake, kConnecting, kRequestSent, kEstablished, kClosing };
  explicit Conn(boost::asio::io_context& io) : sock(io), line(kMaxLineBytes) {}

  stream_protocol::socket sock;
  Key key{0, 0};
  State state = State::kHandshake;
  bool closed = false;
  boost::asio::streambuf line;  // the CONNECT line, bounded

  // host -> guest: one chunk read from the socket at a time.
  std::vector<uint8_t> rx = std::vector<uint8_t>(kReadChunk);
  size_t rx_len = 0, rx_off = 0;
  bool reading = false;
  bool host_eof = false;
  bool ready = false;  // in ready_
  bool credit_requested = false;
  uint32_t tx_cnt = 0;          // bytes sent to the guest
  uint32_t peer_buf_alloc = 0;  // the guest's receive buffer
  uint32_t peer_fwd_cnt = 0;    // bytes the guest consumed

  // guest -> host: what is being written and what waits behind it.
  std::vector<uint8_t> writing, pending;
  bool write_active = false;
  size_t uncounted = 0;       // bytes of `writing` that are not guest data
  uint32_t rx_cnt = 0;        // bytes received from the guest
  uint32_t fwd_cnt = 0;       // of those, written to the socket
  uint32_t reported_fwd = 0;  // the fwd_cnt the guest last saw
  bool guest_shut_send = false;
  bool guest_shut_rcv = false;

  bool has_data() const { return rx_off < rx_len; }
  uint32_t peer_credit() const { return peer_buf_alloc - (tx_cnt - peer_fwd_cnt); }
};

namespace {

// "CONNECT <port>\n" -> port.
std::optional<uint32_t> ParseConnect(std::string_view line) {
  constexpr std::string_view kPrefix = "CONNECT ";
  if (line.size() < kPrefix.size() + 2 || line.substr(0, kPrefix.size()) != kPrefix ||
      line.back() != '\n') {
    return std::nullopt;
  }
  std::string_view digits = line.substr(kPrefix.size(), line.size() - kPrefix.size() - 1);
  if (digits.empty() || digits.size() > 10) return std::nullopt;
  for (char ch : digits) {
    if (ch < '0' || ch > '9') return std::nullopt;
  }
  uint64_t port;
  if (!absl::SimpleAtoi(absl::string_view(digits.data(), digits.size()), &port) ||
      port > UINT32_MAX)
    return std::nullopt;
  return static_cast<uint32_t>(port);
}

}  // namespace

absl::StatusOr<std::shared_ptr<Vsock>> Vsock::Create(EventLoop& loop, VsockOptions options) {
  if (options.guest_cid < 3 || options.guest_cid > 0xfffffffeULL) {
    return absl::InvalidArgumentError(
        absl::StrCat("vsock guest CID ", options.guest_cid, " is not between 3 and 2^32-2"));
  }
  if (options.uds_path.empty() || options.uds_path.size() >= sizeof(sockaddr_un::sun_path) - 12) {
    return absl::InvalidArgumentError(absl::StrCat("vsock socket path \"", options.uds_path,
                                                   "\" is empty or too long for a Unix socket"));
  }
  if (options.max_connections == 0) {
    return absl::InvalidArgumentError("vsock max_connections must be at least 1");
  }
  std::shared_ptr<Vsock> v(new Vsock(loop, std::move(options)));
  const std::string& path = v->options_.uds_path;
  ::unlink(path.c_str());
  boost::system::error_code ec;
  stream_protocol::endpoint ep(path);
  if (v->acceptor_.open(ep.protocol(), ec) || v->acceptor_.bind(ep, ec) ||
      v->acceptor_.listen(boost::asio::socket_base::max_listen_connections, ec)) {
    return absl::UnavailableError(absl::StrCat("vsock: listening on ", path, ": ", ec.message()));
  }
  loop.RunSync([&] { v->Accept(); });
  return v;
}

Vsock::Vsock(EventLoop& loop, VsockOptions options)
    : loop_(loop), options_(std::move(options)), acceptor_(loop.context()) {}

Vsock::~Vsock() {
  auto stop = [this] {
    *alive_ = false;
    CloseAll();
    boost::system::error_code ec;
    acceptor_.close(ec);
  };
  if (loop_.InLoopThread() || loop_.stopped()) {
    stop();
  } else {
    loop_.RunSync(stop);
  }
  ::unlink(options_.uds_path.c_str());
}

void Vsock::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  uint64_t cid = options_.guest_cid;
  CopyConfig({reinterpret_cast<const uint8_t*>(&cid), sizeof(cid)}, offset, data);
}

absl::Status Vsock::Activate(const ActivateContext& ctx) {
  ctx_ = ctx;
  active_ = true;
  tx_blocked_ = false;
  return absl::OkStatus();
}

void Vsock::Reset() {
  CloseAll();
  control_.clear();
  ready_.clear();
  active_ = false;
  ctx_ = {};
}

void Vsock::CloseAll() {
  auto conns = std::move(conns_);
  auto handshakes = std::move(handshakes_);
  conns_.clear();
  handshakes_.clear();
  for (auto& [key, c] : conns) Close(c);
  for (auto& [p, c] : handshakes) Close(c);
  UpdateCount();
}

void Vsock::UpdateCount() { connections_.store(conns_.size() + handshakes_.size()); }

std::shared_ptr<Vsock::Conn> Vsock::Find(Key key) {
  auto it = conns_.find(key);
  return it == conns_.end() ? nullptr : it->second;
}

void Vsock::Close(const std::shared_ptr<Conn>& c) {
  if (c->closed) return;
  c->closed = true;
  boost::system::error_code ec;
  c->sock.close(ec);
  auto it = conns_.find(c->key);
  if (it != conns_.end() && it->second == c) conns_.erase(it);
  handshakes_.erase(c.get());
  UpdateCount();
}

void Vsock::Kick() {
  if (active_ && (!control_.empty() || !ready_.empty())) ctx_.process_again(kRxQueue);
}

void Vsock::SendControl(uint16_t op, Key key, uint32_t flags) {
  // Bounded: Transmit stops taking packets while this many wait, and host
  // events add at most a few per connection.
  if (control_.size() >= 4ULL * options_.max_connections + 64) {
    absl::FPrintF(stderr, "kindling: %s: %d replies wait for rx buffers; op %d dropped\n", name(),
                  control_.size(), op);
    return;
  }
  control_.push_back({op, key, flags});
}

void Vsock::Rst(Key key) {
  SendControl(kVsockOpRst, key);
  if (auto c = Find(key)) Close(c);
}

void Vsock::MarkReady(const std::shared_ptr<Conn>& c) {
  if (c->ready || !c->has_data() || c->state != Conn::State::kEstablished) return;
  c->ready = true;
  ready_.push_back(c->key);
}

// ---- host side ----

void Vsock::Accept() {
  auto c = std::make_shared<Conn>(loop_.context());
  acceptor_.async_accept(c->sock, [this, alive = alive_, c](const boost::system::error_code& ec) {
    if (!*alive) return;
    if (ec == boost::asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      if (!active_ || conns_.size() + handshakes_.size() >= options_.max_connections) {
        boost::system::error_code ignored;
        c->sock.close(ignored);  // no guest yet, or no room
      } else {
        handshakes_[c.get()] = c;
        UpdateCount();
        boost::asio::async_read_until(
            c->sock, c->line, '\n',
            [this, alive, c](const boost::system::error_code& ec, size_t n) {
              if (*alive) OnConnectLine(c, ec, n);
            });
      }
    }
    Accept();
  });
}

void Vsock::OnConnectLine(const std::shared_ptr<Conn>& c, const boost::system::error_code& ec,
                          size_t n) {
  if (c->closed) return;
  handshakes_.erase(c.get());
  UpdateCount();
  std::string bytes(boost::asio::buffers_begin(c->line.data()),
                    boost::asio::buffers_end(c->line.data()));
  std::optional<uint32_t> port;
  if (!ec) port = ParseConnect(std::string_view(bytes).substr(0, n));
  if (!port || !active_) {
    Close(c);
    return;
  }
  // A fresh host-side port for this guest port.
  uint32_t host_port = 0;
  for (uint32_t tries = 0; tries <= options_.max_connections; ++tries) {
    uint32_t p = next_port_++;
    if (next_port_ == 0) next_port_ = 1u << 30;
    if (!conns_.count({p, *port})) {
      host_port = p;
      break;
    }
  }
  c->key = {host_port, *port};
  c->state = Conn::State::kRequestSent;
  // Bytes the host sent after the line go to the guest once connected.
  c->rx_len = bytes.size() - n;
  std::copy(bytes.begin() + n, bytes.end(), c->rx.begin());
  conns_[c->key] = c;
  UpdateCount();
  SendControl(kVsockOpRequest, c->key);
  Kick();
}

void Vsock::ConnectToHost(const VsockHdr& h) {
  Key key{h.dst_port, h.src_port};
  auto c = std::make_shared<Conn>(loop_.context());
  c->key = key;
  c->state = Conn::State::kConnecting;
  c->peer_buf_alloc = h.buf_alloc;
  c->peer_fwd_cnt = h.fwd_cnt;
  conns_[key] = c;
  UpdateCount();
  stream_protocol::endpoint ep(absl::StrCat(options_.uds_path, "_", h.dst_port));
  c->sock.async_connect(ep, [this, alive = alive_, c](const boost::system::error_code& ec) {
    if (!*alive || c->closed) return;
    if (ec) {
      Rst(c->key);
    } else {
      SendControl(kVsockOpResponse, c->key);
      Established(c);
    }
    Kick();
  });
}

void Vsock::Established(const std::shared_ptr<Conn>& c) {
  c->state = Conn::State::kEstablished;
  if (c->has_data()) {
    MarkReady(c);
  } else {
    StartRead(c);
  }
}

void Vsock::StartRead(const std::shared_ptr<Conn>& c) {
  if (c->closed || c->reading || c->host_eof || c->guest_shut_rcv || c->has_data() ||
      c->state != Conn::State::kEstablished) {
    return;
  }
  c->reading = true;
  c->sock.async_read_some(boost::asio::buffer(c->rx),
                          [this, alive = alive_, c](const boost::system::error_code& ec, size_t n) {
                            if (!*alive || c->closed) return;
                            c->reading = false;
                            if (ec == boost::asio::error::eof) {
                              c->host_eof = true;
                              if (c->guest_shut_send) {
                                Rst(c->key);  // both directions are done
                              } else {
                                SendControl(kVsockOpShutdown, c->key, kVsockShutdownSend);
                              }
                            } else if (ec) {
                              Rst(c->key);
                            } else {
                              c->rx_len = n;
                              c->rx_off = 0;
                              MarkReady(c);
                            }
                            Kick();
                          });
}

void Vsock::StartWrite(const std::shared_ptr<Conn>& c) {
  if (c->write_active || c->closed) return;
  if (c->writing.empty()) std::swap(c->writing, c->pending);
  if (c->writing.empty()) return;
  c->write_active = true;
  boost::asio::async_write(c->sock, boost::asio::buffer(c->writing),
                           [this, alive = alive_, c](const boost::system::error_code& ec, size_t) {
                             if (!*alive || c->closed) return;
                             c->write_active = false;
                             if (ec) {
                               Rst(c->key);
                               Kick();
                               return;
                             }
                             OnWritten(c);
                           });
}

void Vsock::OnWritten(const std::shared_ptr<Conn>& c) {
  c->fwd_cnt += static_cast<uint32_t>(c->writing.size() - c->uncounted);
  c->uncounted = 0;
  c->writing.clear();
  if (!c->pending.empty()) {
    StartWrite(c);
  } else if (c->state == Conn::State::kClosing) {
    Close(c);  // the guest closed; its last bytes are out
    return;
  } else if (c->guest_shut_send) {
    boost::system::error_code ec;
    c->sock.shutdown(stream_protocol::socket::shutdown_send, ec);
  }
  // Tell the guest about freed space before it runs dry.
  uint32_t guest_view = kBufAlloc - (c->rx_cnt - c->reported_fwd);
  if (c->fwd_cnt != c->reported_fwd && guest_view < kBufAlloc / 2) {
    SendControl(kVsockOpCreditUpdate, c->key);
    Kick();
  }
}

// ---- guest side ----

absl::Status Vsock::Restored() {
  if (!active_) return absl::OkStatus();
  Queue& q = ctx_.queues[kEventQueue];
  if (!q.active()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, q.Pop());
  if (!chain) {
    std::fprintf(stderr, "kindling: %s: no event buffer for the transport reset\n",
                 name().c_str());
    return absl::OkStatus();
  }
  ChainWriter w(*ctx_.memory, *chain);
  const uint32_t transport_reset = 0;  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, le32
  RETURN_IF_ERROR(w.WriteObj(transport_reset));
  RETURN_IF_ERROR(q.PushUsed(chain->head, static_cast<uint32_t>(w.written())));
  ctx_.interrupt->SignalQueue(kEventQueue);
  return absl::OkStatus();
}

absl::Status Vsock::ProcessQueue(uint16_t index) {
  if (!active_) return absl::OkStatus();
  if (index == kTxQueue) return Transmit();
  if (index == kRxQueue) return Receive();
  return absl::OkStatus();  // event queue: the device holds its buffers
}

absl::Status Vsock::Transmit() {
  tx_blocked_ = false;
  auto ready = [this] {
    // Too many replies waiting for rx buffers: Receive resumes us once the
    // guest takes some.
    tx_blocked_ = control_.size() >= 2ULL * options_.max_connections + 32;
    return !tx_blocked_;
  };
  RETURN_IF_ERROR(ServeQueue(
      ctx_, kTxQueue,
      [this](const DescriptorChain& chain) -> absl::StatusOr<uint32_t> {
        if (chain.readable_bytes < sizeof(VsockHdr)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "vsock packet of ", chain.readable_bytes, " bytes is shorter than its 44-byte header"));
        }
        ChainReader r(*ctx_.memory, chain);
        ASSIGN_OR_RETURN(VsockHdr h, r.ReadObj<VsockHdr>());
        if (h.len > r.remaining()) {
          return absl::InvalidArgumentError(absl::StrCat("vsock packet len ", h.len,
                                                         " runs past its buffers (", r.remaining(),
                                                         " bytes after the header)"));
        }
        RETURN_IF_ERROR(HandlePacket(h, r));
        return 0;
      },
      ready));
  Kick();
  return absl::OkStatus();
}

absl::Status Vsock::HandlePacket(const VsockHdr& h, ChainReader& payload) {
  Key key{h.dst_port, h.src_port};
  if (h.src_cid != options_.guest_cid || h.dst_cid != kVsockHostCid || h.type != kVsockTypeStream) {
    // Not a packet this device routes; the named connection is not ours
    // to end (its ports may be real), so only the reply.
    if (h.op != kVsockOpRst) SendControl(kVsockOpRst, key);
    return absl::OkStatus();
  }
  std::shared_ptr<Conn> c = Find(key);
  if (h.op == kVsockOpRequest) {
    if (c || conns_.size() + handshakes_.size() >= options_.max_connections) {
      Rst(key);
    } else {
      ConnectToHost(h);
    }
    return absl::OkStatus();
  }
  if (!c) {
    if (h.op != kVsockOpRst) SendControl(kVsockOpRst, key);
    return absl::OkStatus();
  }
  c->peer_buf_alloc = h.buf_alloc;
  c->peer_fwd_cnt = h.fwd_cnt;
  using State = Conn::State;
  switch (h.op) {
    case kVsockOpResponse: {
      if (c->state != State::kRequestSent) {
        Rst(key);
        break;
      }
      std::string ok = absl::StrCat("OK ", c->key.first, "\n");
      c->writing.assign(ok.begin(), ok.end());
      c->uncounted = ok.size();
      StartWrite(c);
      Established(c);
      break;
    }
    case kVsockOpRw: {
      uint32_t space = kBufAlloc - (c->rx_cnt - c->fwd_cnt);
      if (c->state != State::kEstablished || c->guest_shut_send || h.len > space) {
        Rst(key);  // before the handshake, after SHUTDOWN, or beyond its credit
        break;
      }
      size_t at = c->pending.size();
      c->pending.resize(at + h.len);
      RETURN_IF_ERROR(payload.Read({c->pending.data() + at, h.len}));
      c->rx_cnt += h.len;
      StartWrite(c);
      break;
    }
    case kVsockOpCreditUpdate:
      c->credit_requested = false;
      MarkReady(c);
      break;
    case kVsockOpCreditRequest:
      SendControl(kVsockOpCreditUpdate, key);
      break;
    case kVsockOpShutdown:
      if (h.flags & kVsockShutdownRcv) {
        c->guest_shut_rcv = true;
        c->rx_len = c->rx_off = 0;  // nobody will read it
      }
      if (h.flags & kVsockShutdownSend) c->guest_shut_send = true;
      if (c->guest_shut_rcv && c->guest_shut_send) {
        // The guest closed: RST completes it; its last bytes still go out.
        SendControl(kVsockOpRst, key);
        conns_.erase(key);
        UpdateCount();
        c->state = State::kClosing;
        if (!c->write_active && c->pending.empty())
          Close(c);
        else
          StartWrite(c);
      } else if (c->guest_shut_send && !c->write_active && c->pending.empty()) {
        boost::system::error_code ec;
        c->sock.shutdown(stream_protocol::socket::shutdown_send, ec);
      }
      break;
    case kVsockOpRst:
      Close(c);
      break;
    default:
      Rst(key);  // unknown op
  }
  return absl::OkStatus();
}

absl::Status Vsock::Receive() {
  Queue& q = ctx_.queues[kRxQueue];
  if (!q.active()) return absl::OkStatus();
  bool used = false;
  for (uint32_t served = 0;; ++served) {
    if (served == q.size()) {
      ctx_.process_again(kRxQueue);
      break;
    }
    // What goes next: replies first, then data round-robin.
    std::shared_ptr<Conn> data;
    while (control_.empty() && !ready_.empty() && !data) {
      std::shared_ptr<Conn> c = Find(ready_.front());
      ready_.pop_front();
      if (!c) continue;
      c->ready = false;
      if (!c->has_data() || c->state != Conn::State::kEstablished) continue;
      if (c->peer_credit() == 0) {
        if (!c->credit_requested) {
          c->credit_requested = true;
          SendControl(kVsockOpCreditRequest, c->key);
        }
        continue;  // a CREDIT_UPDATE makes it ready again
      }
      data = c;
    }
    if (control_.empty() && !data) break;
    ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, q.Pop());
    if (!chain) {
      if (data) {
        data->ready = true;
        ready_.push_front(data->key);
      }
      ASSIGN_OR_RETURN(bool more, q.EnableNotification(true));
      if (more) continue;
      break;  // the guest's rx notification brings us back
    }
    if (chain->writable_bytes < sizeof(VsockHdr)) {
      return absl::InvalidArgumentError(absl::StrCat("vsock rx buffer of ", chain->writable_bytes,
                                                     " bytes cannot hold a 44-byte header"));
    }
    VsockHdr h = {};
    h.src_cid = kVsockHostCid;
    h.dst_cid = options_.guest_cid;
    h.type = kVsockTypeStream;
    h.buf_alloc = kBufAlloc;
    Key key;
    uint64_t n = 0;
    if (!control_.empty()) {
      Control ctl = control_.front();
      control_.pop_front();
      key = ctl.key;
      h.op = ctl.op;
      h.flags = ctl.flags;
    } else {
      key = data->key;
      n = std::min<uint64_t>({data->rx_len - data->rx_off, data->peer_credit(),
                              chain->writable_bytes - sizeof(VsockHdr)});
      h.op = n > 0 ? kVsockOpRw : kVsockOpCreditUpdate;  // a header-only buffer
      h.len = static_cast<uint32_t>(n);
    }
    h.src_port = key.first;
    h.dst_port = key.second;
    if (std::shared_ptr<Conn> c = Find(key)) {
      h.fwd_cnt = c->fwd_cnt;
      c->reported_fwd = c->fwd_cnt;
    }
    ChainWriter w(*ctx_.memory, *chain);
    RETURN_IF_ERROR(w.WriteObj(h));
    if (data) {
      RETURN_IF_ERROR(w.Write({data->rx.data() + data->rx_off, n}));
      data->rx_off += n;
      data->tx_cnt += static_cast<uint32_t>(n);
      if (data->has_data()) {
        MarkReady(data);
      } else {
        data->rx_len = data->rx_off = 0;
        StartRead(data);
      }
    }
    RETURN_IF_ERROR(q.PushUsed(chain->head, static_cast<uint32_t>(sizeof(VsockHdr) + n)));
    used = true;
  }
  if (used && q.NeedsInterrupt()) ctx_.interrupt->SignalQueue(kRxQueue);
  if (tx_blocked_ && control_.size() < 2ULL * options_.max_connections + 32) {
    tx_blocked_ = false;
    ctx_.process_again(kTxQueue);
  }
  return absl::OkStatus();
}

}  // namespace virtio
