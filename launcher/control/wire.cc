#include "launcher/control/wire.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace kindling::control {
namespace {

constexpr size_t kMaxCounterName = 128;
constexpr size_t kMaxText = 4096;

void PutLe(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t GetLe(std::string_view in, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<uint8_t>(in[i])} << (8 * i);
  return v;
}

bool KnownType(uint8_t t) {
  return (t >= 1 && t <= static_cast<uint8_t>(Type::kMigrateSet)) ||
         (t >= 0x80 && t <= static_cast<uint8_t>(Type::kMigrationProgress));
}

}  // namespace

bool IsCommand(Type t) { return static_cast<uint8_t>(t) < 0x80; }

std::string Encode(const Message& m) {
  std::string out;
  out.reserve(kHeader + m.payload.size());
  out.push_back(static_cast<char>(m.type));
  PutLe(out, m.seq, 4);
  out.append(m.payload, 0, kMaxPayload);
  return out;
}

absl::StatusOr<Message> Decode(std::string_view packet) {
  if (packet.size() < kHeader) {
    return absl::InvalidArgumentError(
        absl::StrCat("control packet of ", packet.size(), " bytes: shorter than its ",
                     kHeader, "-byte header"));
  }
  if (packet.size() > kMaxPacket) {
    return absl::InvalidArgumentError(absl::StrCat(
        "control packet of ", packet.size(), " bytes: over the ", kMaxPacket, " limit"));
  }
  uint8_t t = static_cast<uint8_t>(packet[0]);
  if (!KnownType(t)) {
    return absl::InvalidArgumentError(absl::StrCat("control packet: unknown type ", t));
  }
  Message m{static_cast<Type>(t), static_cast<uint32_t>(GetLe(packet.substr(1), 4)),
            std::string(packet.substr(kHeader))};
  if (IsCommand(m.type) && m.seq == 0) {
    return absl::InvalidArgumentError("control packet: a command with sequence number 0");
  }
  return m;
}

std::string EncodeState(const StateEvent& s) {
  std::string out;
  out.push_back(static_cast<char>(s.state));
  PutLe(out, static_cast<uint32_t>(s.exit_code), 4);
  out.append(s.detail, 0, kMaxText);
  return out;
}

absl::StatusOr<StateEvent> DecodeState(std::string_view p) {
  if (p.size() < 5) return absl::InvalidArgumentError("state event: shorter than 5 bytes");
  uint8_t st = static_cast<uint8_t>(p[0]);
  if (st < 1 || st > 6) {
    return absl::InvalidArgumentError(absl::StrCat("state event: unknown state ", st));
  }
  if (p.size() - 5 > kMaxText) {
    return absl::InvalidArgumentError("state event: detail over 4096 bytes");
  }
  return StateEvent{static_cast<VmState>(st),
                    static_cast<int32_t>(static_cast<uint32_t>(GetLe(p.substr(1), 4))),
                    std::string(p.substr(5))};
}

std::string EncodeReply(const absl::Status& s, std::string_view body) {
  std::string out;
  out.push_back(static_cast<char>(s.code()));
  std::string msg(s.message().substr(0, kMaxText));
  PutLe(out, msg.size(), 2);
  out += msg;
  out.append(body.substr(0, kMaxPayload - out.size()));
  return out;
}

absl::StatusOr<Reply> DecodeReply(std::string_view p) {
  if (p.size() < 3) return absl::InvalidArgumentError("reply: shorter than 3 bytes");
  uint8_t code = static_cast<uint8_t>(p[0]);
  if (code > static_cast<uint8_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::InvalidArgumentError(absl::StrCat("reply: unknown status code ", code));
  }
  size_t len = GetLe(p.substr(1), 2);
  if (len > kMaxText || len > p.size() - 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("reply: message length ", len, " runs past the packet"));
  }
  Reply r;
  r.status = absl::Status(static_cast<absl::StatusCode>(code),
                          absl::string_view(p.data() + 3, len));
  r.body = std::string(p.substr(3 + len));
  return r;
}

std::string EncodeDeviceReset(const DeviceReset& d) {
  std::string out;
  std::string name = d.device.substr(0, kMaxCounterName);
  PutLe(out, name.size(), 2);
  out += name;
  out.append(d.reason, 0, kMaxText);
  return out;
}

absl::StatusOr<DeviceReset> DecodeDeviceReset(std::string_view p) {
  if (p.size() < 2) return absl::InvalidArgumentError("device reset: truncated name length");
  size_t len = GetLe(p, 2);
  if (len == 0 || len > kMaxCounterName || len > p.size() - 2) {
    return absl::InvalidArgumentError(absl::StrCat("device reset: name length ", len));
  }
  if (p.size() - 2 - len > kMaxText) {
    return absl::InvalidArgumentError("device reset: reason over 4096 bytes");
  }
  return DeviceReset{std::string(p.substr(2, len)), std::string(p.substr(2 + len))};
}

std::string EncodeSnapshotRequest(const SnapshotRequest& r) {
  std::string out(1, static_cast<char>((r.stay_paused ? 1 : 0) | (r.diff ? 2 : 0)));
  return out + r.directory;
}

std::string EncodeMigrateRequest(const MigrateRequest& r) {
  std::string out(1, static_cast<char>(r.mode));
  PutLe(out, r.max_downtime_ms, 4);
  PutLe(out, r.bandwidth_mibps, 4);
  out.push_back(static_cast<char>(r.postcopy_after_rounds));
  return out + r.destination;
}

absl::StatusOr<MigrateRequest> DecodeMigrateRequest(std::string_view p) {
  if (p.size() < 11) return absl::InvalidArgumentError("migrate request: too short");
  MigrateRequest r;
  r.mode = static_cast<uint8_t>(p[0]);
  r.max_downtime_ms = static_cast<uint32_t>(GetLe(p.substr(1), 4));
  r.bandwidth_mibps = static_cast<uint32_t>(GetLe(p.substr(5), 4));
  r.postcopy_after_rounds = static_cast<uint8_t>(p[9]);
  r.destination = std::string(p.substr(10));
  if (r.mode > 2) return absl::InvalidArgumentError("migrate request: unknown mode");
  if (r.postcopy_after_rounds > kMaxPostcopyAfterRounds) {
    return absl::InvalidArgumentError(
        absl::StrCat("migrate request: post-copy after ", r.postcopy_after_rounds,
                     " rounds, more than ", kMaxPostcopyAfterRounds));
  }
  if (r.max_downtime_ms == 0 || r.max_downtime_ms > 60000) {
    return absl::InvalidArgumentError("migrate request: downtime limit outside 1 to 60000 ms");
  }
  if (r.destination.size() > kMaxText || r.destination.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("migrate request: destination of more than 4096 bytes");
  }
  return r;
}

std::string EncodeMigrateSetRequest(const MigrateSetRequest& r) {
  uint8_t what = (r.bandwidth_mibps ? 1 : 0) | (r.max_downtime_ms ? 2 : 0) |
                 (r.start_postcopy ? 4 : 0) | (r.cancel ? 8 : 0);
  std::string out(1, static_cast<char>(what));
  PutLe(out, r.max_downtime_ms.value_or(0), 4);
  PutLe(out, r.bandwidth_mibps.value_or(0), 4);
  return out;
}

absl::StatusOr<MigrateSetRequest> DecodeMigrateSetRequest(std::string_view p) {
  if (p.size() != 9) return absl::InvalidArgumentError("migrate-set request: not 9 bytes");
  const auto what = static_cast<uint8_t>(p[0]);
  if (what == 0 || what > 15) {
    return absl::InvalidArgumentError("migrate-set request: no change, or an unknown one");
  }
  MigrateSetRequest r;
  r.start_postcopy = what & 4;
  r.cancel = what & 8;
  if (what & 2) {
    r.max_downtime_ms = static_cast<uint32_t>(GetLe(p.substr(1), 4));
    if (*r.max_downtime_ms == 0 || *r.max_downtime_ms > 60000) {
      return absl::InvalidArgumentError("migrate-set request: downtime outside 1 to 60000 ms");
    }
  }
  if (what & 1) {
    r.bandwidth_mibps = static_cast<uint32_t>(GetLe(p.substr(5), 4));
    if (*r.bandwidth_mibps > (1u << 20)) {
      return absl::InvalidArgumentError("migrate-set request: bandwidth above 1048576 MiB/s");
    }
  }
  return r;
}

absl::StatusOr<SnapshotRequest> DecodeSnapshotRequest(std::string_view p) {
  if (p.empty()) return absl::InvalidArgumentError("snapshot request: empty");
  if ((static_cast<uint8_t>(p[0]) & ~3u) != 0) {
    return absl::InvalidArgumentError("snapshot request: unknown flags");
  }
  std::string_view dir = p.substr(1);
  if (dir.empty() || dir.size() > kMaxText || dir[0] != '/' ||
      dir.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        "snapshot request: the directory must be an absolute path of 1 to 4096 bytes");
  }
  return SnapshotRequest{std::string(dir), (p[0] & 1) != 0, (p[0] & 2) != 0};
}

std::string EncodeCounters(const Counters& c) {
  std::string out;
  for (const auto& [name, value] : c) {
    if (name.size() > kMaxCounterName || out.size() + 10 + name.size() > kMaxPayload) continue;
    PutLe(out, name.size(), 2);
    out += name;
    PutLe(out, value, 8);
  }
  return out;
}

absl::StatusOr<Counters> DecodeCounters(std::string_view p) {
  Counters out;
  while (!p.empty()) {
    if (p.size() < 2) return absl::InvalidArgumentError("counters: truncated name length");
    size_t len = GetLe(p, 2);
    if (len == 0 || len > kMaxCounterName) {
      return absl::InvalidArgumentError(
          absl::StrCat("counters: name length ", len, " (1 to ", kMaxCounterName, ")"));
    }
    if (p.size() < 2 + len + 8) return absl::InvalidArgumentError("counters: truncated entry");
    out.emplace_back(std::string(p.substr(2, len)), GetLe(p.substr(2 + len), 8));
    p.remove_prefix(2 + len + 8);
  }
  return out;
}

absl::Status CheckScreenshotName(std::string_view name) {
  constexpr std::string_view kPrefix = "screenshot-", kSuffix = ".png";
  bool ok = name.size() > kPrefix.size() + kSuffix.size() &&
            name.size() <= kPrefix.size() + 32 + kSuffix.size() &&
            name.substr(0, kPrefix.size()) == kPrefix &&
            name.substr(name.size() - kSuffix.size()) == kSuffix;
  for (size_t i = kPrefix.size(); ok && i < name.size() - kSuffix.size(); ++i) {
    ok = (name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f');
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "screenshot file name '", std::string(name.substr(0, 64)),
        "': expected screenshot-HEX.png"));
  }
  return absl::OkStatus();
}

}  // namespace kindling::control
