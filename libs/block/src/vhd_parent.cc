// VHD parent fields. Facts from the Virtual Hard Disk Image Format
// Specification (locator platform codes, header layout); Windows writes the
// locators' "data space" in bytes rather than sectors, so readers ignore it
// and writers put a byte count of at least 512 there. Code is ours.
#include "libs/block/src/vhd_parent.h"

#include <iconv.h>

#include <cstring>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "kindling/status_macros.h"
#include "libs/block/src/endian.h"

namespace block::vhd {
namespace {

using internal::LoadBe32;
using internal::LoadBe64;
using internal::StoreBe32;
using internal::StoreBe64;

constexpr uint32_t Code(const char (&c)[5]) {
  return uint32_t(uint8_t(c[0])) << 24 | uint32_t(uint8_t(c[1])) << 16 |
         uint32_t(uint8_t(c[2])) << 8 | uint8_t(c[3]);
}
constexpr uint32_t kW2ru = Code("W2ru"), kW2ku = Code("W2ku"), kMacX = Code("MacX");

absl::StatusOr<std::string> Convert(const char* to, const char* from, const void* in,
                                    size_t n) {
  iconv_t cd = iconv_open(to, from);
  if (cd == reinterpret_cast<iconv_t>(-1)) {
    return absl::InternalError(absl::StrFormat("iconv_open(%s, %s): %s", to, from,
                                               strerror(errno)));
  }
  absl::Cleanup close = [cd] { iconv_close(cd); };
  std::string out(n * 2 + 16, '\0');
  char* ip = const_cast<char*>(static_cast<const char*>(in));
  char* op = out.data();
  size_t il = n, ol = out.size();
  if (iconv(cd, &ip, &il, &op, &ol) == static_cast<size_t>(-1)) {
    return absl::InvalidArgumentError(absl::StrFormat("not valid %s text", from));
  }
  out.resize(out.size() - ol);
  return out;
}

// A Windows path (or file URL) as a path here, relative ones against `dir`.
std::string LocalPath(std::string p, const std::string& dir) {
  if (p.rfind("file://", 0) == 0) p = p.substr(7);
  p = absl::StrReplaceAll(p, {{"\\", "/"}});
  while (p.rfind("./", 0) == 0) p = p.substr(2);
  if (p.size() >= 2 && p[1] == ':') {  // "C:/...": only the name can help here
    p = p.substr(p.rfind('/') + 1);
  }
  if (p.empty() || p[0] == '/') return p;
  return dir + p;
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> ToUtf16(std::string_view utf8, bool big_endian) {
  ASSIGN_OR_RETURN(std::string s, Convert(big_endian ? "UTF-16BE" : "UTF-16LE", "UTF-8",
                                          utf8.data(), utf8.size()));
  return std::vector<uint8_t>(s.begin(), s.end());
}

absl::StatusOr<std::string> FromUtf16(const uint8_t* p, size_t n, bool big_endian) {
  size_t len = 0;
  while (len + 1 < n && (p[len] | p[len + 1]) != 0) len += 2;
  return Convert("UTF-8", big_endian ? "UTF-16BE" : "UTF-16LE", p, len);
}

absl::StatusOr<std::vector<uint8_t>> EncodeParent(uint8_t* dyn, const NewParent& p,
                                                  uint64_t at) {
  memcpy(dyn + kParentUniqueId, p.unique_id.data(), 16);
  StoreBe32(dyn + kParentTimeStamp, p.time_stamp);
  ASSIGN_OR_RETURN(auto name, ToUtf16(p.stored, true));
  if (name.size() > 512) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "VHD parent name '%s' is longer than the header's 256 UTF-16 units", p.stored));
  }
  memcpy(dyn + kParentName, name.data(), name.size());
  std::string relative = p.stored;
  if (relative.empty() || relative[0] != '/') relative = ".\\" + relative;
  ASSIGN_OR_RETURN(auto w2ru, ToUtf16(absl::StrReplaceAll(relative, {{"/", "\\"}}), false));
  const std::string url = "file://" + p.absolute;
  std::vector<uint8_t> data;
  int slot = 0;
  auto add = [&](uint32_t code, const void* bytes, size_t n) {
    const uint32_t space = (n + 511) / 512 * 512;
    uint8_t* e = dyn + kParentLocators + 24 * slot++;
    StoreBe32(e, code);
    StoreBe32(e + 4, space);  // bytes, as Windows writes it
    StoreBe32(e + 8, n);
    StoreBe64(e + 16, at + data.size());
    const size_t start = data.size();
    data.resize(start + space, 0);
    memcpy(data.data() + start, bytes, n);
  };
  if (relative[0] != '/') add(kW2ru, w2ru.data(), w2ru.size());
  add(kMacX, url.data(), url.size());
  return data;
}

absl::StatusOr<std::vector<std::string>> ParentCandidates(const File& child, uint64_t fsize,
                                                          const uint8_t* dyn) {
  const std::string& name = child.name();
  const std::string dir = name.substr(0, name.rfind('/') + 1);
  std::vector<std::pair<int, std::string>> found;  // (preference, path)
  for (int i = 0; i < kLocatorCount; ++i) {
    const uint8_t* e = dyn + kParentLocators + 24 * i;
    const uint32_t code = LoadBe32(e), len = LoadBe32(e + 8);
    const uint64_t off = LoadBe64(e + 16);
    const int rank = code == kW2ru ? 0 : code == kMacX ? 1 : code == kW2ku ? 2 : -1;
    if (rank < 0 || len == 0) continue;  // empty, or a platform we cannot use
    if (len > kMaxLocatorBytes || off > fsize || len > fsize - off) {
      return absl::DataLossError(absl::StrFormat(
          "%s: VHD dynamic header field parent locator %d (offset %u): data [0x%x, +%u) "
          "is outside the %u-byte file or too long",
          name, i, kParentLocators + 24 * i, off, len, fsize));
    }
    std::vector<uint8_t> data(len);
    RETURN_IF_ERROR(child.PRead(data.data(), len, off));
    absl::StatusOr<std::string> text =
        code == kMacX ? std::string(data.begin(), data.end()) : FromUtf16(data.data(), len, false);
    if (!text.ok()) {
      return absl::DataLossError(absl::StrFormat(
          "%s: VHD parent locator %d (offset %u): %s", name, i, kParentLocators + 24 * i,
          text.status().message()));
    }
    found.emplace_back(rank, LocalPath(*text, dir));
  }
  auto unicode = FromUtf16(dyn + kParentName, 512, true);
  if (unicode.ok() && !unicode->empty()) found.emplace_back(3, LocalPath(*unicode, dir));
  std::stable_sort(found.begin(), found.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> paths;
  for (auto& [rank, path] : found) {
    if (!path.empty()) paths.push_back(std::move(path));
  }
  return paths;
}

}  // namespace block::vhd
