// The PEM files behind --tls-cert, --tls-key and --tls-ca, read the same
// way by `kindling serve` and the client verbs: each must exist, be
// readable and hold at most kMaxPemBytes; the error names the flag and the
// file.
//
//   ASSIGN_OR_RETURN(TlsFiles pem, ReadTlsFiles(cert_path, key_path, ca_path));
//   opts.pem_root_certs = pem.ca;
#ifndef KINDLING_LAUNCHER_CONTROL_TLS_FILES_H_
#define KINDLING_LAUNCHER_CONTROL_TLS_FILES_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace kindling::control {

inline constexpr size_t kMaxPemBytes = 1 << 20;

struct TlsFiles {
  std::string cert;
  std::string key;
  std::string ca;
};

absl::StatusOr<TlsFiles> ReadTlsFiles(const std::string& cert, const std::string& key,
                                      const std::string& ca);

}  // namespace kindling::control

#endif  // KINDLING_LAUNCHER_CONTROL_TLS_FILES_H_
