#include "migration/snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/strings/str_cat.h"
#include "migration/memory_file.h"
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
  return absl::OkStatus();
}

absl::Status ValidateSnapshot(const v1::Snapshot& s) {
  if (auto st = ValidateState(s); !st.ok()) return st;
  return ValidateMemory(s.memory(), RegionsTotal(s.machine()));
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

absl::Status WriteSnapshot(const std::string& dir, v1::Snapshot s,
                           const vm_memory::GuestMemory& memory) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, dir);
  }
  s.set_format_version(kFormatVersion);
  s.mutable_machine()->clear_regions();
  for (const vm_memory::GuestRegion* r : memory.regions()) {
    v1::MemoryRegion* out = s.mutable_machine()->add_regions();
    out->set_guest_address(r->start().value);
    out->set_size(r->size());
  }
  std::string tmp_name = absl::StrCat(".", kMemoryFile, ".tmp");
  auto fd = OpenIn(dir, tmp_name.c_str(), O_RDWR | O_CREAT | O_TRUNC);
  if (!fd.ok()) return fd.status();
  auto manifest = WriteMemoryFile(memory, fd->get());
  if (!manifest.ok()) return manifest.status();
  if (::fsync(fd->get()) != 0) return absl::ErrnoToStatus(errno, "fsync memory file");
  std::string tmp = absl::StrCat(dir, "/", tmp_name), path = absl::StrCat(dir, "/", kMemoryFile);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return absl::ErrnoToStatus(errno, path);
  *s.mutable_memory() = *manifest;
  if (auto st = ValidateSnapshot(s); !st.ok()) return st;
  return WriteFileAtomically(dir, kStateFile, s.SerializeAsString());
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

absl::StatusOr<RestoredMemory> RestoreMemory(const std::string& dir, const v1::Snapshot& s,
                                             RestoreMode mode,
                                             const vm_memory::MemoryOptions& options) {
  RestoredMemory out;
  if (mode != RestoreMode::kEager && options.hugepages) {
    return absl::InvalidArgumentError(
        "lazy and uffd restores fill guest RAM in 4 KiB pages: hugepages need an eager one");
  }
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
  auto pager = UffdPager::Start(*out.memory, *std::move(file));
  if (!pager.ok()) return pager.status();
  out.pager = *std::move(pager);
  return out;
}

}  // namespace migration
