// Live migration, destination side: the hello, RAM pages, the state, and
// the DONE/GO exchange. Every address and length from the source is
// checked against the RAM the hello described.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"
#include "migration/address.h"
#include "migration/precopy.h"
#include "migration/snapshot.h"

namespace migration {
namespace {

absl::StatusOr<v1::MigrationHello> ParseHello(const Frame& f);

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("migration stream: ", what));
}

absl::Status LoadPages(const Frame& f, vm_memory::GuestMemory& mem) {
  ASSIGN_OR_RETURN(PagesFrame pf, ParsePagesFrame(f));
  absl::Status s = mem.Write(vm_memory::GuestAddress(pf.gpa), pf.data);
  if (!s.ok()) {
    return Bad(absl::StrCat(pf.data.size() / kStreamPage, " pages at 0x", absl::Hex(pf.gpa),
                            " are not guest RAM: ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status LoadZeroes(const Frame& f, vm_memory::GuestMemory& mem) {
  if (f.payload.size() != 16) return Bad("a ZEROES frame is not 16 bytes");
  uint64_t hdr[2];
  std::memcpy(hdr, f.payload.data(), 16);
  if (hdr[0] % kStreamPage != 0 || hdr[1] % kStreamPage != 0 || hdr[1] == 0 ||
      hdr[1] > kMaxPagesPerFrame * kStreamPage) {
    return Bad(absl::StrCat("zero range 0x", absl::Hex(hdr[0]), " + ", hdr[1]));
  }
  absl::Status s = mem.ZeroRange(vm_memory::GuestAddress(hdr[0]), hdr[1]);
  if (!s.ok()) {
    return Bad(absl::StrCat("zero range at 0x", absl::Hex(hdr[0]), " is not guest RAM: ",
                            s.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Snapshot> ParseState(const Frame& f) {
  v1::Snapshot s;
  if (!s.ParseFromArray(f.payload.data(), static_cast<int>(f.payload.size()))) {
    return Bad("the STATE frame is not a kindling.migration.v1.Snapshot");
  }
  RETURN_IF_ERROR(ValidateState(s));
  return s;
}

bool SameMachine(const v1::Machine& a, const v1::Machine& b) {
  return a.vcpus() == b.vcpus() && a.irqchip() == b.irqchip() && SameRegionLayout(a, b);
}

// Whether the state describes the RAM the hello made us allocate.
bool SameRegions(const v1::Machine& m, const vm_memory::GuestMemory& mem) {
  std::vector<const vm_memory::GuestRegion*> regions = mem.regions();
  if (static_cast<size_t>(m.regions_size()) != regions.size()) return false;
  for (int i = 0; i < m.regions_size(); ++i) {
    if (m.regions(i).guest_address() != regions[i]->start().value ||
        m.regions(i).size() != regions[i]->size()) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<v1::MigrationHello> ReceiveHello(FrameStream& s, absl::Time deadline) {
  ASSIGN_OR_RETURN(Frame f, s.Expect(FrameType::kHello, deadline));
  return ParseHello(f);
}

absl::StatusOr<IncomingSource> AcceptSource(int listener, const AcceptOptions& o) {
  for (;;) {
    if (o.stop && o.stop()) {
      return absl::CancelledError("stopped while waiting for a migration source");
    }
    absl::Duration left = o.deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError("no migration source connected in time");
    }
    absl::StatusOr<vm_memory::UniqueFd> conn =
        Accept(listener, std::min(left, absl::Milliseconds(200)));
    if (!conn.ok()) {
      if (absl::IsDeadlineExceeded(conn.status())) continue;
      return conn.status();
    }
    FrameStream s(conn->get());
    absl::StatusOr<Frame> f = s.Receive(absl::Now() + o.hello_timeout);
    if (f.ok() && f->type == FrameType::kHello) {
      absl::StatusOr<v1::MigrationHello> hello = ParseHello(*f);
      if (!hello.ok()) {
        (void)s.SendText(FrameType::kError, std::string(hello.status().message()));
        return hello.status();
      }
      return IncomingSource{*std::move(conn), *std::move(hello)};
    }
    absl::Status why = f.ok() ? absl::InvalidArgumentError(absl::StrCat(
                                    "a connection sent frame type ", static_cast<int>(f->type),
                                    " where a migration begins with HELLO"))
                              : f.status();
    if (f.ok()) (void)s.SendText(FrameType::kError, std::string(why.message()));
    if (o.ignored) o.ignored(why);
  }
}

namespace {

absl::StatusOr<v1::MigrationHello> ParseHello(const Frame& f) {
  v1::MigrationHello hello;
  if (!hello.ParseFromArray(f.payload.data(), static_cast<int>(f.payload.size()))) {
    return Bad("the HELLO frame is not a kindling.migration.v1.MigrationHello");
  }
  if (hello.stream_version() == 0 || hello.stream_version() > kStreamVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "migration stream version ", hello.stream_version(), " is not one this kindling reads (1 to ",
        kStreamVersion, ")"));
  }
  RETURN_IF_ERROR(ValidateMachine(hello.machine()));
  uint64_t total = 0;
  for (const v1::MemoryRegion& r : hello.machine().regions()) total += r.size();
  if (total != hello.ram_bytes()) {
    return Bad(absl::StrCat("HELLO says ", hello.ram_bytes(), " bytes of RAM, its regions ",
                            total));
  }
  if (!hello.has_skeleton()) return Bad("HELLO without the machine's description");
  if (absl::Status s = ValidateState(hello.skeleton()); !s.ok()) {
    return Bad(absl::StrCat("HELLO's machine description: ", s.message()));
  }
  if (!SameMachine(hello.skeleton().machine(), hello.machine())) {
    return Bad("HELLO's machine description differs from its machine");
  }
  return hello;
}

}  // namespace

absl::StatusOr<IncomingState> ReceiveMemoryAndState(FrameStream& s,
                                                    vm_memory::GuestMemory& memory,
                                                    absl::Duration peer_timeout) {
  RETURN_IF_ERROR(s.Send(FrameType::kReady, {}));
  std::optional<v1::Snapshot> state;
  std::optional<PageBitmap> postcopy;
  while (true) {
    ASSIGN_OR_RETURN(Frame f, s.Receive(absl::Now() + peer_timeout));
    switch (f.type) {
      case FrameType::kPages:
        if (state) return Bad("PAGES after STATE");
        RETURN_IF_ERROR(LoadPages(f, memory));
        break;
      case FrameType::kZeroes:
        if (state) return Bad("ZEROES after STATE");
        RETURN_IF_ERROR(LoadZeroes(f, memory));
        break;
      case FrameType::kPostcopy: {
        if (state || postcopy) return Bad("POSTCOPY after STATE or a second POSTCOPY");
        ASSIGN_OR_RETURN(postcopy, DecodePageBitmap(f.payload, memory));
        break;
      }
      case FrameType::kState: {
        if (state) return Bad("a second STATE");
        ASSIGN_OR_RETURN(state, ParseState(f));
        if (!SameRegions(state->machine(), memory)) {
          return Bad("the STATE's RAM regions differ from the HELLO's");
        }
        break;
      }
      case FrameType::kEnd:
        if (!state) return Bad("END before STATE");
        return IncomingState{*std::move(state), std::move(postcopy)};
      case FrameType::kError:
        return absl::AbortedError(absl::StrCat("the source gave up: ", f.payload));
      default:
        return Bad(absl::StrCat("unexpected ", FrameTypeName(f.type)));
    }
  }
}

absl::Status FinishIncoming(FrameStream& s, absl::Duration peer_timeout) {
  RETURN_IF_ERROR(s.Send(FrameType::kDone, {}));
  return s.Expect(FrameType::kGo, absl::Now() + peer_timeout).status();
}

}  // namespace migration
