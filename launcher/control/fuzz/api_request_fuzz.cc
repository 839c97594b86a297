// libFuzzer: a serialized CreateVmRequest from an API client, through the
// daemon's validation and the VmConfig -> `kindling run` flags conversion;
// the same bytes as a ReceiveMigrationRequest, whose address becomes the
// VM process's --incoming flag.
// Never a crash; and what validation accepts must convert to flags that
// `kindling run`'s parser accepts and that survive a round trip.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "kindling/v1/vm.pb.h"
#include "launcher/cli.h"
#include "launcher/control/config.h"
#include "migration/address.h"

using namespace kindling;

namespace {

void Receive(const uint8_t* data, size_t size) {
  v1::ReceiveMigrationRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return;
  bool valid = ::migration::ParseStreamAddress(req.listen()).ok();
  auto flags = ParseRunFlags({"--incoming", req.listen()});
  if (valid != flags.ok()) std::abort();  // the daemon's check is the VM process's
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Receive(data, size);
  v1::CreateVmRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  (void)control::ValidateVmId(req.vm_id());
  if (!control::ValidateVmConfig(req.config(), 4096, 64).ok()) return 0;
  auto flags = control::ToRunFlags(req.config(), "/nonexistent/cpu_template.json");
  if (!flags.ok()) return 0;
  auto parsed = ParseRunFlags(*flags);
  if (!parsed.ok()) std::abort();  // ToRunFlags checked exactly this
  parsed->vm.cpu_template.clear();   // FromRunOptions would read the file
  auto back = control::FromRunOptions(*parsed);
  if (!back.ok()) std::abort();
  auto again = control::ToRunFlags(*back, "/nonexistent/cpu_template.json");
  if (!again.ok()) std::abort();
  auto reparsed = ParseRunFlags(*again);
  if (!reparsed.ok()) std::abort();
  reparsed->vm.cpu_template.clear();
  auto third = control::FromRunOptions(*reparsed);
  if (!third.ok() || third->SerializeAsString() != back->SerializeAsString()) std::abort();
  return 0;
}
