#include "launcher/control/wire.h"

#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "launcher/control/socket.h"

using namespace kindling::control;

TEST_CASE("a command round-trips with its sequence number") {
  auto m = Decode(Encode({Type::kConsoleInput, 42, "ls\n"}));
  REQUIRE(m.ok());
  CHECK(m->type == Type::kConsoleInput);
  CHECK(m->seq == 42);
  CHECK(m->payload == "ls\n");
}

TEST_CASE("bad packets are refused with what was wrong") {
  CHECK(Decode("abc").status().message().find("shorter than its 5-byte header") !=
        std::string::npos);
  CHECK(Decode(std::string("\x42\0\0\0\0", 5)).status().message().find("unknown type 66") !=
        std::string::npos);
  CHECK(Decode(std::string("\x01\0\0\0\0", 5)).status().message().find("sequence number 0") !=
        std::string::npos);
  CHECK(!Decode(std::string(kMaxPacket + 1, '\x82')).ok());
}

TEST_CASE("state events, replies and counters round-trip and are bounded") {
  auto st = DecodeState(EncodeState({VmState::kStopped, -3, "guest wrote 253"}));
  REQUIRE(st.ok());
  CHECK(st->state == VmState::kStopped);
  CHECK(st->exit_code == -3);
  CHECK(st->detail == "guest wrote 253");
  CHECK(!DecodeState(std::string("\x09\0\0\0\0", 5)).ok());

  auto r = DecodeReply(EncodeReply(absl::FailedPreconditionError("not running"), "xyz"));
  REQUIRE(r.ok());
  CHECK(r->status.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(r->status.message() == "not running");
  CHECK(r->body == "xyz");
  CHECK(!DecodeReply(std::string("\x09\xff\x00", 3)).ok());  // length past the end
  CHECK(!DecodeReply(std::string("\x63\x00\x00", 3)).ok());  // code 99

  auto c = DecodeCounters(EncodeCounters({{"exits", 7}, {"halt_exits", 1ULL << 40}}));
  REQUIRE(c.ok());
  REQUIRE(c->size() == 2);
  CHECK((*c)[1] == std::pair<std::string, uint64_t>{"halt_exits", 1ULL << 40});
  CHECK(!DecodeCounters(std::string("\x05\x00" "abc", 5)).ok());
  CHECK(!DecodeCounters(std::string("\x00\x00", 2)).ok());
}

TEST_CASE("one packet is one message over a seqpacket pair") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
  UniqueFd a(sv[0]), b(sv[1]);
  REQUIRE(SendPacket(a.get(), Encode({Type::kStart, 1, ""})).ok());
  REQUIRE(SendPacket(a.get(), Encode({Type::kConsoleOutput, 0, "hi"})).ok());
  std::string pkt;
  REQUIRE(*RecvPacket(b.get(), pkt));
  CHECK(Decode(pkt)->type == Type::kStart);
  REQUIRE(*RecvPacket(b.get(), pkt));
  CHECK(Decode(pkt)->payload == "hi");
  REQUIRE(SendPacket(a.get(), std::string(kMaxPacket + 10, 'x')).ok());
  CHECK(!RecvPacket(b.get(), pkt).ok());  // oversized: an error, not a truncated message
  a.reset();
  auto eof = RecvPacket(b.get(), pkt);
  REQUIRE(eof.ok());
  CHECK(!*eof);
}

TEST_CASE("a snapshot request carries an absolute directory and its flag") {
  auto m = Decode(Encode({Type::kSnapshot, 3, EncodeSnapshotRequest({"/s", false})}));
  REQUIRE(m.ok());  // the packet type is known to the decoder
  CHECK(m->type == Type::kSnapshot);
  CHECK(IsCommand(m->type));
  auto r = DecodeSnapshotRequest(EncodeSnapshotRequest({"/srv/snap", true}));
  REQUIRE(r.ok());
  CHECK(r->directory == "/srv/snap");
  CHECK(r->stay_paused);
  CHECK_FALSE(r->diff);
  r = DecodeSnapshotRequest(EncodeSnapshotRequest({"/a", false, true}));
  REQUIRE(r.ok());
  CHECK_FALSE(r->stay_paused);
  CHECK(r->diff);
  for (std::string bad : {std::string(), std::string(1, '\0'), std::string("\0rel", 4),
                          std::string("\x04/a", 3), std::string("\0/a\0b", 5),
                          std::string(1, '\0') + "/" + std::string(4096, 'a')}) {
    INFO("payload size " << bad.size());
    auto d = DecodeSnapshotRequest(bad);
    REQUIRE_FALSE(d.ok());
    CHECK(std::string(d.status().message()).find("snapshot request") != std::string::npos);
  }
}

TEST_CASE("a migrate request carries its mode, limits and destination") {
  auto m = Decode(Encode({Type::kMigrate, 4, EncodeMigrateRequest({"unix:/m.sock", 2, 50, 8, 7})}));
  REQUIRE(m.ok());
  CHECK(IsCommand(m->type));
  auto r = DecodeMigrateRequest(m->payload);
  REQUIRE(r.ok());
  CHECK(r->destination == "unix:/m.sock");
  CHECK(r->mode == 2);
  CHECK(r->max_downtime_ms == 50);
  CHECK(r->bandwidth_mibps == 8);
  CHECK(r->postcopy_after_rounds == 7);
  CHECK(Decode(Encode({Type::kMigrationProgress, 0, ""})).ok());
  for (const MigrateRequest& bad : {MigrateRequest{"unix:/m", 3, 50, 0},
                                    MigrateRequest{"unix:/m", 0, 0, 0},
                                    MigrateRequest{"unix:/m", 0, 60001, 0},
                                    MigrateRequest{"unix:/m", 2, 50, 0, 31},
                                    MigrateRequest{std::string("a\0b", 3), 0, 5, 0}}) {
    CHECK_FALSE(DecodeMigrateRequest(EncodeMigrateRequest(bad)).ok());
  }
  CHECK_FALSE(DecodeMigrateRequest("short").ok());
}

TEST_CASE("a migrate-set request carries only the changes it names") {
  MigrateSetRequest in;
  in.bandwidth_mibps = 0;  // lift the cap: a change, not "unset"
  in.start_postcopy = true;
  auto m = Decode(Encode({Type::kMigrateSet, 5, EncodeMigrateSetRequest(in)}));
  REQUIRE(m.ok());
  CHECK(IsCommand(m->type));
  auto r = DecodeMigrateSetRequest(m->payload);
  REQUIRE(r.ok());
  CHECK(r->bandwidth_mibps == std::optional<uint32_t>(0));
  CHECK_FALSE(r->max_downtime_ms.has_value());
  CHECK(r->start_postcopy);
  CHECK_FALSE(r->cancel);
  MigrateSetRequest d;
  d.max_downtime_ms = 40;
  d.cancel = true;
  auto back = DecodeMigrateSetRequest(EncodeMigrateSetRequest(d));
  REQUIRE(back.ok());
  CHECK(back->max_downtime_ms == std::optional<uint32_t>(40));
  CHECK(back->cancel);
  CHECK_FALSE(back->bandwidth_mibps.has_value());
  // Nothing to change, unknown bits, limits out of range, a wrong size.
  for (std::string bad : {std::string(9, '\0'), std::string("\x10") + std::string(8, '\0'),
                          std::string("\x02") + std::string(8, '\0'),
                          std::string("\x02\x61\xea\x00\x00", 5) + std::string(4, '\0'),
                          std::string("\x01\0\0\0\0\x01\0\x10\0", 9), std::string("\x08")}) {
    CHECK_FALSE(DecodeMigrateSetRequest(bad).ok());
  }
}

TEST_CASE("screenshot file names: screenshot-HEX.png and nothing else") {
  REQUIRE(CheckScreenshotName("screenshot-0123456789abcdef.png").ok());
  for (const char* bad : {"", "screenshot-.png", "screenshot-../x.png", "screenshot-12/.png",
                          "screenshot-ABC.png", "screenshot-12.png.tmp", "x-12.png",
                          "screenshot-0123456789abcdef0123456789abcdef0.png"}) {
    INFO(bad);
    REQUIRE(CheckScreenshotName(bad).code() == absl::StatusCode::kInvalidArgument);
  }
}
