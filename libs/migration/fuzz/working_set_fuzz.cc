// libFuzzer: a snapshot's `working-set` file as an attacker writes it.
// DecodeWorkingSet must refuse what is wrong with an error, never crash
// or allocate past the RAM it is for; what it accepts must encode back to
// the same pages.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "migration/working_set.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr uint64_t kRamPages = 256;  // 1 MiB of RAM
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto pages = migration::DecodeWorkingSet(bytes, kRamPages);
  if (!pages.ok()) return 0;
  if (pages->size() > kRamPages) std::abort();
  for (uint64_t p : *pages) {
    if (p >= kRamPages) std::abort();
  }
  auto again = migration::DecodeWorkingSet(migration::EncodeWorkingSet(*pages, kRamPages),
                                           kRamPages);
  if (!again.ok() || *again != *pages) std::abort();
  auto merged = migration::MergeWorkingSets(*pages, *pages, kRamPages);
  if (merged.size() > pages->size()) std::abort();
  return 0;
}
