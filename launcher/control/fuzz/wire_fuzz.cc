// libFuzzer: a packet on the daemon <-> VM process socket, from either
// side (a VM process a guest took over is hostile to the daemon).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "launcher/control/wire.h"

using namespace kindling::control;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto m = Decode(in);
  if (m.ok()) {
    if (Encode(*m) != in) std::abort();  // one encoding per message
    (void)DecodeState(m->payload);
    (void)DecodeReply(m->payload);
    (void)DecodeCounters(m->payload);
    if (auto r = DecodeSnapshotRequest(m->payload);
        r.ok() && EncodeSnapshotRequest(*r) != m->payload) {
      std::abort();
    }
    if (auto d = DecodeDeviceReset(m->payload); d.ok() && EncodeDeviceReset(*d) != m->payload) {
      std::abort();
    }
    if (auto r = DecodeMigrateRequest(m->payload);
        r.ok() && EncodeMigrateRequest(*r) != m->payload) {
      std::abort();
    }
    // Fields a migrate-set does not name are ignored: it survives a
    // second round, not byte for byte.
    if (auto r = DecodeMigrateSetRequest(m->payload); r.ok()) {
      auto again = DecodeMigrateSetRequest(EncodeMigrateSetRequest(*r));
      if (!again.ok() || again->bandwidth_mibps != r->bandwidth_mibps ||
          again->max_downtime_ms != r->max_downtime_ms ||
          again->start_postcopy != r->start_postcopy || again->cancel != r->cancel) {
        std::abort();
      }
    }
  }
  if (auto c = DecodeCounters(in); c.ok() && EncodeCounters(*c) != in) std::abort();
  return 0;
}
