#include "migration/working_set.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "migration/snapshot.pb.h"
#include "vm-memory/unique_fd.h"

namespace migration {
namespace {

absl::Status Invalid(std::string why) {
  return absl::InvalidArgumentError(absl::StrCat("working set: ", why));
}

// Checks one (first, count) run against the RAM and the running total.
absl::Status CheckRun(int index, uint64_t first, uint64_t count, uint64_t ram_pages,
                      uint64_t& total) {
  if (count == 0) return Invalid(absl::StrCat("run ", index, " has no pages"));
  if (first >= ram_pages || count > ram_pages - first) {
    return Invalid(absl::StrCat("run ", index, " (", count, " pages from page ", first,
                                ") is past the RAM's ", ram_pages, " pages"));
  }
  total += count;
  if (total > ram_pages) {
    return Invalid(absl::StrCat("more pages than the RAM's ", ram_pages));
  }
  return absl::OkStatus();
}

}  // namespace

std::string EncodeWorkingSet(std::span<const uint64_t> pages, uint64_t ram_pages) {
  ::kindling::migration::v1::WorkingSet ws;
  ws.set_format_version(1);
  ws.set_ram_pages(ram_pages);
  for (size_t i = 0; i < pages.size();) {
    size_t j = i + 1;
    while (j < pages.size() && pages[j] == pages[j - 1] + 1) ++j;
    ws.add_runs(pages[i]);
    ws.add_runs(j - i);
    i = j;
  }
  return ws.SerializeAsString();
}

absl::StatusOr<std::vector<uint64_t>> DecodeWorkingSet(std::string_view bytes,
                                                       uint64_t ram_pages) {
  if (bytes.size() > kMaxWorkingSetBytes) {
    return Invalid(absl::StrCat(bytes.size(), " bytes, more than ", kMaxWorkingSetBytes));
  }
  ::kindling::migration::v1::WorkingSet ws;
  if (!ws.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Invalid("not a WorkingSet message");
  }
  if (ws.format_version() != 1) {
    return Invalid(absl::StrCat("format version ", ws.format_version(), " (this build reads 1)"));
  }
  if (ws.ram_pages() != ram_pages) {
    return Invalid(absl::StrCat("for ", ws.ram_pages(), " pages of RAM; the snapshot has ",
                                ram_pages));
  }
  if (ws.runs_size() % 2 != 0) return Invalid("an odd number of run fields");
  uint64_t total = 0;
  for (int i = 0; i < ws.runs_size(); i += 2) {
    if (absl::Status st = CheckRun(i / 2, ws.runs(i), ws.runs(i + 1), ram_pages, total);
        !st.ok()) {
      return st;
    }
  }
  std::vector<uint64_t> pages;
  pages.reserve(total);
  for (int i = 0; i < ws.runs_size(); i += 2) {
    for (uint64_t p = 0; p < ws.runs(i + 1); ++p) pages.push_back(ws.runs(i) + p);
  }
  return pages;
}

std::vector<uint64_t> MergeWorkingSets(std::span<const uint64_t> newer,
                                       std::span<const uint64_t> older, uint64_t ram_pages) {
  std::vector<bool> seen(ram_pages, false);
  std::vector<uint64_t> out;
  for (std::span<const uint64_t> list : {newer, older}) {
    for (uint64_t p : list) {
      if (p >= ram_pages || seen[p]) continue;
      seen[p] = true;
      out.push_back(p);
    }
  }
  return out;
}

absl::StatusOr<std::vector<uint64_t>> ReadWorkingSet(const std::string& dir, uint64_t ram_pages) {
  std::string path = absl::StrCat(dir, "/", kWorkingSetFile);
  vm_memory::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": none"));
    return absl::ErrnoToStatus(errno, path);
  }
  std::string bytes(kMaxWorkingSetBytes + 1, '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::read(fd.get(), bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  bytes.resize(got);
  absl::StatusOr<std::vector<uint64_t>> pages = DecodeWorkingSet(bytes, ram_pages);
  if (!pages.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", pages.status().message()));
  }
  return pages;
}

absl::Status WriteWorkingSet(const std::string& dir, std::span<const uint64_t> pages,
                             uint64_t ram_pages) {
  std::string path = absl::StrCat(dir, "/", kWorkingSetFile);
  std::string tmp = absl::StrCat(dir, "/.", kWorkingSetFile, ".", ::getpid(), ".tmp");
  std::string bytes = EncodeWorkingSet(pages, ram_pages);
  vm_memory::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, tmp);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status st = absl::ErrnoToStatus(errno, tmp);
      ::unlink(tmp.c_str());
      return st;
    }
    done += static_cast<size_t>(n);
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status st = absl::ErrnoToStatus(errno, path);
    ::unlink(tmp.c_str());
    return st;
  }
  return absl::OkStatus();
}

}  // namespace migration
