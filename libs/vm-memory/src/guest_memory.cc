#include "vm-memory/guest_memory.h"

#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vm_memory {
namespace {

constexpr uint64_t kSmallPage = 4096;
constexpr uint64_t kHugePage = 2 << 20;

std::string Hex(uint64_t v) { return absl::StrFormat("0x%x", v); }

absl::StatusOr<UniqueFd> CreateMemfd(const MemoryOptions& options,
                                     uint64_t size) {
  unsigned flags = MFD_CLOEXEC;
  if (options.hugepages) flags |= MFD_HUGETLB | MFD_HUGE_2MB;
  UniqueFd fd(::memfd_create(options.name.c_str(), flags));
  if (!fd.valid()) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("memfd_create(", options.name,
                            options.hugepages ? ", hugetlb 2M" : "", ")"));
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("sizing guest RAM memfd to ", size, " bytes"));
  }
  // Hugepages are reserved up front: without this a host with too few free
  // hugepages would SIGBUS on first touch instead of failing here.
  if (options.hugepages && ::fallocate(fd.get(), 0, 0, size) != 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("reserving ", size / kHugePage,
                            " hugetlb 2M pages for guest RAM (are enough "
                            "reserved in /proc/sys/vm/nr_hugepages?)"));
  }
  return fd;
}

}  // namespace

void VolatileSlice::CopyTo(std::span<uint8_t> dst) const {
  std::memcpy(dst.data(), data_, std::min(dst.size(), size_));
}

void VolatileSlice::CopyFrom(std::span<const uint8_t> src) const {
  std::memcpy(data_, src.data(), std::min(src.size(), size_));
}

GuestRegion::GuestRegion(GuestAddress start, UniqueFd fd, MappedRegion mapping,
                         uint64_t page_size, bool private_file)
    : start_(start),
      fd_(std::move(fd)),
      mapping_(std::move(mapping)),
      page_size_(page_size),
      dirty_(std::make_unique<DirtyBitmap>(mapping_.size(), kSmallPage)),
      private_file_(private_file) {}

namespace {

absl::Status CheckRegionSpec(const RegionSpec& spec, uint64_t page) {
  if (spec.size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest RAM region at ", Hex(spec.start.value),
                     " has size 0"));
  }
  if (!spec.start.IsAligned(page) || spec.size % page != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "guest RAM region ", Hex(spec.start.value), "+", Hex(spec.size),
        " is not aligned to the ", page, "-byte page size"));
  }
  if (!spec.start.CheckedAdd(spec.size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest RAM region ", Hex(spec.start.value), "+",
                     Hex(spec.size), " wraps the address space"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GuestRegion>> GuestRegion::Create(
    const RegionSpec& spec, const MemoryOptions& options) {
  const uint64_t page = options.hugepages ? kHugePage : kSmallPage;
  if (absl::Status s = CheckRegionSpec(spec, page); !s.ok()) return s;
  auto fd = CreateMemfd(options, spec.size);
  if (!fd.ok()) return fd.status();
  auto mapping =
      MappedRegion::MapShared(fd->get(), spec.size, PROT_READ | PROT_WRITE);
  if (!mapping.ok()) return mapping.status();
  return std::unique_ptr<GuestRegion>(new GuestRegion(
      spec.start, std::move(*fd), std::move(*mapping), page));
}

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::Create(
    std::span<const RegionSpec> layout, const MemoryOptions& options) {
  if (layout.empty()) {
    return absl::InvalidArgumentError("guest memory needs at least one region");
  }
  std::vector<RegionSpec> sorted(layout.begin(), layout.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const RegionSpec& a, const RegionSpec& b) {
              return a.start < b.start;
            });
  std::vector<std::unique_ptr<GuestRegion>> regions;
  for (const RegionSpec& spec : sorted) {
    if (!regions.empty() && spec.start < regions.back()->end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "guest RAM region at ", Hex(spec.start.value),
          " overlaps the region ending at ", Hex(regions.back()->end().value)));
    }
    auto region = GuestRegion::Create(spec, options);
    if (!region.ok()) return region.status();
    regions.push_back(std::move(*region));
  }
  return std::unique_ptr<GuestMemory>(new GuestMemory(std::move(regions)));
}

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::MapFile(
    std::span<const RegionSpec> layout, int fd) {
  // Check the layout as Create does, on throwaway memfds of size 0: the
  // same rules and messages, without allocating RAM.
  std::vector<RegionSpec> sorted(layout.begin(), layout.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const RegionSpec& a, const RegionSpec& b) { return a.start < b.start; });
  struct stat st;
  if (::fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, "fstat of the memory file");
  std::vector<std::unique_ptr<GuestRegion>> regions;
  uint64_t offset = 0;
  for (const RegionSpec& spec : sorted) {
    if (absl::Status s = CheckRegionSpec(spec, kSmallPage); !s.ok()) return s;
    if (!regions.empty() && spec.start < regions.back()->end()) {
      return absl::InvalidArgumentError("guest RAM regions overlap");
    }
    if (offset + spec.size > static_cast<uint64_t>(st.st_size)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the memory file (", st.st_size, " bytes) is shorter than the regions"));
    }
    auto mapping = MappedRegion::MapPrivateFile(fd, offset, spec.size,
                                                PROT_READ | PROT_WRITE);
    if (!mapping.ok()) return mapping.status();
    int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return absl::ErrnoToStatus(errno, "dup of the memory file");
    regions.push_back(std::unique_ptr<GuestRegion>(new GuestRegion(
        spec.start, UniqueFd(dup), std::move(*mapping), kSmallPage, true)));
    offset += spec.size;
  }
  if (regions.empty()) return absl::InvalidArgumentError("guest memory needs at least one region");
  return std::unique_ptr<GuestMemory>(new GuestMemory(std::move(regions)));
}

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::Adopt(
    std::span<const RegionSpec> layout, std::vector<UniqueFd> fds) {
  if (layout.empty() || layout.size() != fds.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adopting guest memory: ", layout.size(), " regions but ", fds.size(), " fds"));
  }
  std::vector<std::unique_ptr<GuestRegion>> regions;
  for (size_t i = 0; i < layout.size(); ++i) {
    const RegionSpec& spec = layout[i];
    if (absl::Status s = CheckRegionSpec(spec, kSmallPage); !s.ok()) return s;
    struct stat st;
    if (::fstat(fds[i].get(), &st) != 0) return absl::ErrnoToStatus(errno, "fstat of a RAM fd");
    if (static_cast<uint64_t>(st.st_size) < spec.size) {
      return absl::InvalidArgumentError(absl::StrCat("guest RAM region ", Hex(spec.start.value),
                                                     ": its fd holds only ", st.st_size, " bytes"));
    }
    auto mapping = MappedRegion::MapShared(fds[i].get(), spec.size, PROT_READ | PROT_WRITE);
    if (!mapping.ok()) return mapping.status();
    regions.push_back(std::unique_ptr<GuestRegion>(
        new GuestRegion(spec.start, std::move(fds[i]), std::move(*mapping), kSmallPage)));
  }
  std::sort(regions.begin(), regions.end(),
            [](const auto& a, const auto& b) { return a->start() < b->start(); });
  for (size_t i = 1; i < regions.size(); ++i) {
    if (regions[i]->start() < regions[i - 1]->end()) {
      return absl::InvalidArgumentError("guest RAM regions overlap");
    }
  }
  return std::unique_ptr<GuestMemory>(new GuestMemory(std::move(regions)));
}

const GuestRegion* GuestMemory::FindRegion(GuestAddress addr) const {
  auto it = std::upper_bound(
      regions_.begin(), regions_.end(), addr,
      [](GuestAddress a, const std::unique_ptr<GuestRegion>& r) {
        return a < r->start();
      });
  if (it == regions_.begin()) return nullptr;
  const GuestRegion* r = std::prev(it)->get();
  return r->Contains(addr) ? r : nullptr;
}

template <typename Fn>
absl::Status GuestMemory::ForEachChunk(GuestAddress addr, uint64_t len,
                                       Fn&& fn) const {
  if (!CheckRange(addr, len)) {
    return absl::OutOfRangeError(
        absl::StrCat("guest access ", Hex(addr.value), "+", Hex(len),
                     " is outside guest RAM"));
  }
  uint64_t done = 0;
  while (done < len) {
    GuestAddress cur(addr.value + done);
    const GuestRegion* r = FindRegion(cur);
    RegionOffset off(cur.value - r->start().value);
    uint64_t n = std::min(len - done, r->size() - off.value);
    fn(*r, off, done, n);
    done += n;
  }
  return absl::OkStatus();
}

bool GuestMemory::CheckRange(GuestAddress addr, uint64_t len) const {
  if (len == 0) return true;
  if (!addr.CheckedAdd(len - 1)) return false;
  uint64_t done = 0;
  while (done < len) {
    const GuestRegion* r = FindRegion(GuestAddress(addr.value + done));
    if (r == nullptr) return false;
    done += std::min(len - done, r->end().value - (addr.value + done));
  }
  return true;
}

absl::Status GuestMemory::Read(GuestAddress addr,
                               std::span<uint8_t> dst) const {
  return ForEachChunk(addr, dst.size(),
                      [&](const GuestRegion& r, RegionOffset off,
                          uint64_t done, uint64_t n) {
                        std::memcpy(dst.data() + done, r.HostPointer(off), n);
                      });
}

namespace {
absl::Status Misaligned16(GuestAddress addr) {
  return absl::InvalidArgumentError(
      absl::StrFormat("16-bit access at 0x%x is not 2-byte aligned", addr.value));
}
}  // namespace

absl::StatusOr<uint16_t> GuestMemory::LoadAtomic16(GuestAddress addr) const {
  if (!addr.IsAligned(2)) return Misaligned16(addr);
  // Regions are page-aligned, so an aligned 16-bit field is in one region.
  uint16_t v = 0;
  absl::Status s =
      ForEachChunk(addr, 2, [&](const GuestRegion& r, RegionOffset off, uint64_t, uint64_t) {
        v = __atomic_load_n(reinterpret_cast<const uint16_t*>(r.HostPointer(off)),
                            __ATOMIC_ACQUIRE);
      });
  if (!s.ok()) return s;
  return v;
}

absl::Status GuestMemory::StoreAtomic16(GuestAddress addr, uint16_t value) {
  if (!addr.IsAligned(2)) return Misaligned16(addr);
  return ForEachChunk(addr, 2, [&](const GuestRegion& r, RegionOffset off, uint64_t, uint64_t) {
    __atomic_store_n(reinterpret_cast<uint16_t*>(r.HostPointer(off)), value, __ATOMIC_RELEASE);
    r.dirty_bitmap().MarkRange(off.value, 2);
  });
}

absl::Status GuestMemory::Write(GuestAddress addr,
                                std::span<const uint8_t> src) {
  return ForEachChunk(addr, src.size(),
                      [&](const GuestRegion& r, RegionOffset off,
                          uint64_t done, uint64_t n) {
                        std::memcpy(r.HostPointer(off), src.data() + done, n);
                        r.dirty_bitmap().MarkRange(off.value, n);
                      });
}

absl::Status GuestMemory::ZeroRange(GuestAddress addr, uint64_t len) {
  return ForEachChunk(
      addr, len,
      [&](const GuestRegion& r, RegionOffset off, uint64_t, uint64_t n) {
        const uint64_t page = r.page_size();
        uint64_t first = (off.value + page - 1) / page * page;
        uint64_t last = (off.value + n) / page * page;
        if (last <= first) {
          std::memset(r.HostPointer(off), 0, n);
        } else {
          std::memset(r.HostPointer(off), 0, first - off.value);
          std::memset(r.HostPointer(RegionOffset(last)), 0, off.value + n - last);
          // A private file mapping's fd is the snapshot file: never punch it.
          if (r.private_file() ||
              ::fallocate(r.fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          first, last - first) != 0) {
            // Not supported by this fd: fall back to writing zeros.
            std::memset(r.HostPointer(RegionOffset(first)), 0, last - first);
          }
        }
        r.dirty_bitmap().MarkRange(off.value, n);
      });
}

absl::StatusOr<std::vector<VolatileSlice>> GuestMemory::GetSlices(
    GuestAddress addr, uint64_t len, Access access) {
  std::vector<VolatileSlice> slices;
  absl::Status s = ForEachChunk(
      addr, len,
      [&](const GuestRegion& r, RegionOffset off, uint64_t, uint64_t n) {
        if (access == Access::kWrite) r.dirty_bitmap().MarkRange(off.value, n);
        slices.emplace_back(r.HostPointer(off), n);
      });
  if (!s.ok()) return s;
  return slices;
}

std::vector<const GuestRegion*> GuestMemory::regions() const {
  std::vector<const GuestRegion*> out;
  for (const auto& r : regions_) out.push_back(r.get());
  return out;
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const auto& r : regions_) total += r->size();
  return total;
}

uint64_t GuestMemory::CountDirtyPages() const {
  uint64_t n = 0;
  for (const auto& r : regions_) n += r->dirty_bitmap().CountDirtyPages();
  return n;
}

}  // namespace vm_memory
