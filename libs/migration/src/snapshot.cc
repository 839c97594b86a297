#include "migration/snapshot.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "migration/memory_file.h"
#include "migration/working_set.h"
#include "vm-memory/unique_fd.h"

namespace migration {
namespace {

constexpr char kStateFile[] = "state.pb";
constexpr char kMemoryFile[] = "memory";
constexpr uint64_t kPage = 4096;

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("snapshot state: ", what));
}

absl::Status ValidateRegions(const v1::Machine& m) {
  if (m.regions_size() == 0 || m.regions_size() > kMaxRegions) {
    return Invalid(absl::StrCat(m.regions_size(), " memory regions, expected 1 to ",
                                kMaxRegions));
  }
  uint64_t total = 0, prev_end = 0;
  for (const v1::MemoryRegion& r : m.regions()) {
    uint64_t a = r.guest_address(), n = r.size();
    if (n == 0 || a % kPage != 0 || n % kPage != 0 || a + n < a) {
      return Invalid(absl::StrCat("memory region at 0x", absl::Hex(a), " size ", n,
                                  " is empty, unaligned or wraps"));
    }
    if (a < prev_end) return Invalid("memory regions overlap or are out of order");
    prev_end = a + n;
    total += n;
    if (total > kMaxMemoryBytes) {
      return Invalid(absl::StrCat("more than ", kMaxMemoryBytes >> 30, " GiB of memory"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateMemory(const v1::MemoryManifest& mem, uint64_t total) {
  if (mem.file_size() != total) {
    return Invalid(absl::StrCat("memory file size ", mem.file_size(),
                                " differs from the regions' total ", total));
  }
  uint32_t c = mem.chunk_size();
  if (c < kPage || c > (1u << 30) || (c & (c - 1)) != 0) {
    return Invalid(absl::StrCat("memory chunk size ", c,
                                " is not a power of two from 4 KiB to 1 GiB"));
  }
  uint64_t chunks = (total + c - 1) / c;
  if (static_cast<uint64_t>(mem.chunk_crc32_size()) != chunks) {
    return Invalid(absl::StrCat(mem.chunk_crc32_size(), " chunk checksums for ",
                                chunks, " chunks"));
  }
  return absl::OkStatus();
}

absl::Status ValidateIds(const v1::Snapshot& s) {
  if (!s.snapshot_id().empty() && s.snapshot_id().size() != 16) {
    return Invalid(absl::StrCat("snapshot id of ", s.snapshot_id().size(), " bytes, expected 16"));
  }
  if (!s.has_base()) return absl::OkStatus();
  const std::string& d = s.base().directory();
  if (d.empty() || d[0] != '/' || d.size() > 4096 || d.find('\0') != std::string::npos) {
    return Invalid("diff base directory is not an absolute path of at most 4096 bytes");
  }
  if (s.base().snapshot_id().size() != 16) {
    return Invalid(absl::StrCat("diff base snapshot id of ", s.base().snapshot_id().size(),
                                " bytes, expected 16"));
  }
  return absl::OkStatus();
}

absl::Status ValidateIrqchip(const v1::Snapshot& s) {
  switch (s.machine().irqchip()) {
    case v1::IRQCHIP_MODE_SPLIT:
      if (!s.irqchip().has_ioapic()) return Invalid("split irqchip without IOAPIC state");
      return absl::OkStatus();
    case v1::IRQCHIP_MODE_FULL:
      if (!s.irqchip().has_kernel()) return Invalid("full irqchip without its KVM state");
      return absl::OkStatus();
    default:
      return Invalid(absl::StrCat("irqchip mode ", s.machine().irqchip(), " is unknown"));
  }
}

uint64_t RegionsTotal(const v1::Machine& m) {
  uint64_t total = 0;
  for (const v1::MemoryRegion& r : m.regions()) total += r.size();
  return total;
}

absl::StatusOr<vm_memory::UniqueFd> OpenIn(const std::string& dir, const char* name,
                                           int flags) {
  std::string path = absl::StrCat(dir, "/", name);
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
  if (fd < 0) return absl::ErrnoToStatus(errno, path);
  return vm_memory::UniqueFd(fd);
}

absl::Status WriteFileAtomically(const std::string& dir, const char* name,
                                 const std::string& bytes) {
  std::string tmp = absl::StrCat(dir, "/.", name, ".tmp");
  std::string path = absl::StrCat(dir, "/", name);
  {
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return absl::ErrnoToStatus(errno, tmp);
    vm_memory::UniqueFd owner(fd);
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::ErrnoToStatus(errno, tmp);
      done += n;
    }
    if (::fsync(fd) != 0) return absl::ErrnoToStatus(errno, tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return absl::ErrnoToStatus(errno, path);
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateMachine(const v1::Machine& m) {
  if (m.vcpus() == 0 || m.vcpus() > kMaxVcpus) {
    return Invalid(absl::StrCat(m.vcpus(), " vCPUs, expected 1 to ", kMaxVcpus));
  }
  return ValidateRegions(m);
}

absl::Status ValidateState(const v1::Snapshot& s) {
  if (s.format_version() == 0 || s.format_version() > kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot format version ", s.format_version(),
        " is not one this kindling reads (1 to ", kFormatVersion, ")"));
  }
  const v1::Machine& m = s.machine();
  if (auto st = ValidateMachine(m); !st.ok()) return st;
  if (static_cast<uint32_t>(s.vcpus_size()) != m.vcpus()) {
    return Invalid(absl::StrCat(s.vcpus_size(), " vCPU records for a machine of ",
                                m.vcpus()));
  }
  if (auto st = ValidateIrqchip(s); !st.ok()) return st;
  if (s.devices_size() > 64) return Invalid("more than 64 devices");
  return ValidateIds(s);
}

absl::Status ValidateSnapshot(const v1::Snapshot& s) {
  if (auto st = ValidateState(s); !st.ok()) return st;
  if (auto st = ValidateMemory(s.memory(), RegionsTotal(s.machine())); !st.ok()) return st;
  if (!s.has_base()) {
    if (s.memory().present_size() != 0) return Invalid("present ranges in a full snapshot");
    return absl::OkStatus();
  }
  if (auto st = ValidatePresentRanges(s.memory(), s.memory().file_size()); !st.ok()) {
    return Invalid(std::string(st.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Snapshot> ParseSnapshot(std::string_view bytes) {
  if (bytes.size() > kMaxStateBytes) {
    return Invalid(absl::StrCat(bytes.size(), " bytes, at most ", kMaxStateBytes));
  }
  v1::Snapshot s;
  if (!s.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Invalid("not a kindling.migration.v1.Snapshot message");
  }
  if (auto st = ValidateSnapshot(s); !st.ok()) return st;
  return s;
}

namespace {

// Writes dir/memory with `write_memory` and then dir/state.pb for `s`.
absl::Status WriteSnapshotFiles(
    const std::string& dir, v1::Snapshot s, const vm_memory::GuestMemory& memory,
    const std::function<absl::StatusOr<v1::MemoryManifest>(int fd)>& write_memory) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, dir);
  }
  s.set_format_version(kFormatVersion);
  if (s.snapshot_id().empty()) s.set_snapshot_id(NewSnapshotId());
  s.mutable_machine()->clear_regions();
  for (const vm_memory::GuestRegion* r : memory.regions()) {
    v1::MemoryRegion* out = s.mutable_machine()->add_regions();
    out->set_guest_address(r->start().value);
    out->set_size(r->size());
  }
  std::string tmp_name = absl::StrCat(".", kMemoryFile, ".tmp");
  auto fd = OpenIn(dir, tmp_name.c_str(), O_RDWR | O_CREAT | O_TRUNC);
  if (!fd.ok()) return fd.status();
  auto manifest = write_memory(fd->get());
  if (!manifest.ok()) return manifest.status();
  if (::fsync(fd->get()) != 0) return absl::ErrnoToStatus(errno, "fsync memory file");
  std::string tmp = absl::StrCat(dir, "/", tmp_name), path = absl::StrCat(dir, "/", kMemoryFile);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return absl::ErrnoToStatus(errno, path);
  *s.mutable_memory() = *manifest;
  if (auto st = ValidateSnapshot(s); !st.ok()) return st;
  return WriteFileAtomically(dir, kStateFile, s.SerializeAsString());
}

// Whether two paths name one directory (both must exist).
bool SameDirectory(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

}  // namespace

std::string NewSnapshotId() {
  std::string id(16, '\0');
  size_t got = 0;
  while (got < id.size()) {
    ssize_t n = ::getrandom(id.data() + got, id.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += n;
  }
  if (got < id.size()) {  // no entropy: time and pid still tell snapshots apart
    uint64_t t = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
    uint64_t p = static_cast<uint64_t>(::getpid());
    std::memcpy(id.data(), &t, 8);
    std::memcpy(id.data() + 8, &p, 8);
  }
  return id;
}

absl::Status WriteSnapshot(const std::string& dir, v1::Snapshot s,
                           const vm_memory::GuestMemory& memory) {
  s.clear_base();
  return WriteSnapshotFiles(dir, std::move(s), memory,
                            [&](int fd) { return WriteMemoryFile(memory, fd); });
}

absl::Status WriteDiffSnapshot(const std::string& dir, v1::Snapshot s,
                               const vm_memory::GuestMemory& memory, const PageBitmaps& dirty,
                               const v1::DiffBase& base) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, dir);
  }
  if (SameDirectory(dir, base.directory())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "diff snapshot into ", dir, ": that is its base's own directory; a diff needs "
        "a directory of its own, beside the base it patches"));
  }
  *s.mutable_base() = base;
  return WriteSnapshotFiles(dir, std::move(s), memory,
                            [&](int fd) { return WriteDiffMemoryFile(memory, fd, dirty); });
}

absl::StatusOr<v1::Snapshot> ReadSnapshot(const std::string& dir) {
  auto fd = OpenIn(dir, kStateFile, O_RDONLY);
  if (!fd.ok()) return fd.status();
  std::string bytes;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, absl::StrCat(dir, "/", kStateFile));
    if (n == 0) break;
    bytes.append(buf, n);
    if (bytes.size() > kMaxStateBytes) break;  // ParseSnapshot names the limit
  }
  auto s = ParseSnapshot(bytes);
  if (!s.ok()) {
    return absl::Status(s.status().code(),
                        absl::StrCat(dir, "/", kStateFile, ": ", s.status().message()));
  }
  auto mem = OpenIn(dir, kMemoryFile, O_RDONLY);
  if (!mem.ok()) return mem.status();
  struct stat st;
  if (::fstat(mem->get(), &st) != 0) return absl::ErrnoToStatus(errno, "fstat memory");
  if (static_cast<uint64_t>(st.st_size) != s->memory().file_size()) {
    return absl::DataLossError(absl::StrCat(
        dir, "/", kMemoryFile, " is ", st.st_size, " bytes, the state says ",
        s->memory().file_size()));
  }
  return s;
}

absl::StatusOr<std::vector<ChainLink>> ReadSnapshotChain(const std::string& dir) {
  std::vector<ChainLink> chain;
  auto top = ReadSnapshot(dir);
  if (!top.ok()) return top.status();
  chain.push_back({dir, *std::move(top)});
  while (chain.back().snapshot.has_base()) {
    const ChainLink& diff = chain.back();
    const v1::DiffBase& want = diff.snapshot.base();
    if (static_cast<int>(chain.size()) > kMaxDiffChain) {
      return absl::FailedPreconditionError(absl::StrCat(
          "snapshot ", dir, " stands on more than ", kMaxDiffChain, " diff snapshots"));
    }
    auto base = ReadSnapshot(want.directory());
    if (!base.ok()) {
      return absl::Status(base.status().code(),
                          absl::StrCat("diff snapshot ", diff.dir, ": its base ",
                                       want.directory(), ": ", base.status().message()));
    }
    if (base->snapshot_id() != want.snapshot_id()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "diff snapshot ", diff.dir, ": its base ", want.directory(),
          " was replaced since (snapshot id ", absl::BytesToHexString(base->snapshot_id()),
          ", the diff was taken against ", absl::BytesToHexString(want.snapshot_id()), ")"));
    }
    if (!SameRegionLayout(base->machine(), diff.snapshot.machine())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "diff snapshot ", diff.dir, ": its base ", want.directory(),
          " has another RAM layout"));
    }
    std::string base_dir = want.directory();
    chain.push_back({base_dir, *std::move(base)});
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

absl::Status LoadSnapshotMemory(const std::string& dir, const v1::Snapshot& s,
                                vm_memory::GuestMemory& memory) {
  auto fd = OpenIn(dir, kMemoryFile, O_RDONLY);
  if (!fd.ok()) return fd.status();
  absl::Status st = LoadMemoryFile(fd->get(), s.memory(), memory);
  if (!st.ok()) {
    return absl::Status(st.code(), absl::StrCat(dir, "/", kMemoryFile, ": ", st.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<vm_memory::GuestMemory>> MapSnapshotMemory(
    const std::string& dir, const v1::Snapshot& s) {
  auto fd = OpenIn(dir, kMemoryFile, O_RDONLY);
  if (!fd.ok()) return fd.status();
  auto memory = vm_memory::GuestMemory::MapFile(RegionLayout(s.machine()), fd->get());
  if (!memory.ok()) {
    return absl::Status(memory.status().code(),
                        absl::StrCat(dir, "/", kMemoryFile, ": ", memory.status().message()));
  }
  return memory;
}

bool SameRegionLayout(const v1::Machine& a, const v1::Machine& b) {
  if (a.regions_size() != b.regions_size()) return false;
  for (int i = 0; i < a.regions_size(); ++i) {
    if (a.regions(i).guest_address() != b.regions(i).guest_address() ||
        a.regions(i).size() != b.regions(i).size()) {
      return false;
    }
  }
  return true;
}

std::vector<vm_memory::RegionSpec> RegionLayout(const v1::Machine& m) {
  std::vector<vm_memory::RegionSpec> layout;
  for (const v1::MemoryRegion& r : m.regions()) {
    layout.push_back({vm_memory::GuestAddress(r.guest_address()), r.size()});
  }
  return layout;
}

absl::StatusOr<RestoreMode> ParseRestoreMode(std::string_view name) {
  if (name == "eager") return RestoreMode::kEager;
  if (name == "lazy") return RestoreMode::kLazy;
  if (name == "uffd") return RestoreMode::kUffd;
  return absl::InvalidArgumentError(absl::StrCat(
      "restore mode '", std::string(name), "': expected eager, lazy or uffd"));
}

namespace {

// A diff snapshot's RAM: its full snapshot's, then each diff over it.
absl::StatusOr<RestoredMemory> RestoreChainMemory(const std::string& dir, RestoreMode mode,
                                                  const vm_memory::MemoryOptions& options) {
  if (mode == RestoreMode::kUffd) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot ", dir, " is a diff: restore mode uffd serves pages from one memory file, "
        "use eager or lazy"));
  }
  auto chain = ReadSnapshotChain(dir);
  if (!chain.ok()) return chain.status();
  RestoredMemory out;
  const ChainLink& root = chain->front();
  auto memory = mode == RestoreMode::kLazy
                    ? MapSnapshotMemory(root.dir, root.snapshot)
                    : vm_memory::GuestMemory::Create(RegionLayout(root.snapshot.machine()), options);
  if (!memory.ok()) return memory.status();
  out.memory = *std::move(memory);
  if (mode == RestoreMode::kEager) {
    if (absl::Status st = LoadSnapshotMemory(root.dir, root.snapshot, *out.memory); !st.ok()) {
      return st;
    }
  }
  for (size_t i = 1; i < chain->size(); ++i) {
    const ChainLink& diff = (*chain)[i];
    auto fd = OpenIn(diff.dir, kMemoryFile, O_RDONLY);
    if (!fd.ok()) return fd.status();
    absl::Status st = ApplyDiffMemoryFile(fd->get(), diff.snapshot.memory(), *out.memory);
    if (!st.ok()) {
      return absl::Status(st.code(), absl::StrCat(diff.dir, "/", kMemoryFile, ": ", st.message()));
    }
  }
  return out;
}

}  // namespace

namespace {

constexpr uint64_t kMaxRecordedPages = 1 << 20;  // 4 GiB of first touches

// A uffd restore: the working set first (`why` says why there is none,
// if one could not be read), then the rest of the file's data in the
// background; once it is all in, the pages the guest faulted on before it
// became the working set's head (best effort: a read-only snapshot keeps
// its set).
PagerOptions UffdOptions(const std::string& dir, uint64_t ram_pages, absl::Status& why) {
  PagerOptions po;
  po.fill_rest = true;
  po.record_limit = std::min<uint64_t>(ram_pages, kMaxRecordedPages);
  absl::StatusOr<std::vector<uint64_t>> prior = ReadWorkingSet(dir, ram_pages);
  if (prior.ok()) {
    po.prefetch = *prior;
  } else if (!absl::IsNotFound(prior.status())) {
    why = prior.status();
  }
  po.on_retired = [dir, ram_pages, prior = po.prefetch](std::vector<uint64_t> touched) {
    if (touched.empty()) return;  // nothing new to say
    absl::Status st = WriteWorkingSet(dir, MergeWorkingSets(touched, prior, ram_pages), ram_pages);
    if (!st.ok()) {
      std::fprintf(stderr, "kindling: the working set was not kept: %s\n",
                   std::string(st.message()).c_str());
    }
  };
  return po;
}

}  // namespace

absl::StatusOr<RestoredMemory> RestoreMemory(const std::string& dir, const v1::Snapshot& s,
                                             RestoreMode mode,
                                             const vm_memory::MemoryOptions& options) {
  RestoredMemory out;
  if (mode != RestoreMode::kEager && options.hugepages) {
    return absl::InvalidArgumentError(
        "lazy and uffd restores fill guest RAM in 4 KiB pages: hugepages need an eager one");
  }
  if (s.has_base()) return RestoreChainMemory(dir, mode, options);
  if (mode == RestoreMode::kLazy) {
    auto memory = MapSnapshotMemory(dir, s);
    if (!memory.ok()) return memory.status();
    out.memory = *std::move(memory);
    return out;
  }
  auto memory = vm_memory::GuestMemory::Create(RegionLayout(s.machine()), options);
  if (!memory.ok()) return memory.status();
  out.memory = *std::move(memory);
  if (mode == RestoreMode::kEager) {
    if (absl::Status st = LoadSnapshotMemory(dir, s, *out.memory); !st.ok()) return st;
    return out;
  }
  auto file = OpenIn(dir, kMemoryFile, O_RDONLY);
  if (!file.ok()) return file.status();
  PagerOptions po = UffdOptions(dir, out.memory->total_size() / kPage, out.working_set);
  auto pager = UffdPager::Start(*out.memory, *std::move(file), std::move(po));
  if (!pager.ok()) return pager.status();
  out.pager = *std::move(pager);
  return out;
}

}  // namespace migration
