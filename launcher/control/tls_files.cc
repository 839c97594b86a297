#include "launcher/control/tls_files.h"

#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"

namespace kindling::control {
namespace {

absl::StatusOr<std::string> ReadPem(const char* flag, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, ": required"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot read"));
  std::string out;
  char buf[4096];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    out.append(buf, in.gcount());
    if (out.size() > kMaxPemBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", path, ": larger than ", kMaxPemBytes, " bytes"));
    }
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(flag, " ", path, ": read error"));
  return out;
}

}  // namespace

absl::StatusOr<TlsFiles> ReadTlsFiles(const std::string& cert, const std::string& key,
                                      const std::string& ca) {
  TlsFiles f;
  ASSIGN_OR_RETURN(f.cert, ReadPem("--tls-cert", cert));
  ASSIGN_OR_RETURN(f.key, ReadPem("--tls-key", key));
  ASSIGN_OR_RETURN(f.ca, ReadPem("--tls-ca", ca));
  return f;
}

}  // namespace kindling::control
