// Status propagation macros for absl::Status / absl::StatusOr.
//
// Debian's Abseil (20220623) predates absl's own status macros, so kindling
// keeps this one small header. Example:
//
//   absl::StatusOr<int> ParseSize(std::string_view s);
//   absl::Status Configure(std::string_view s) {
//     ASSIGN_OR_RETURN(int size, ParseSize(s));
//     RETURN_IF_ERROR(Apply(size));
//     return absl::OkStatus();
//   }
#ifndef KINDLING_STATUS_MACROS_H_
#define KINDLING_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KINDLING_CONCAT_INNER_(a, b) a##b
#define KINDLING_CONCAT_(a, b) KINDLING_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status kindling_status_ = (expr);  \
    if (!kindling_status_.ok()) {              \
      return kindling_status_;                 \
    }                                          \
  } while (false)

#define KINDLING_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) {                                      \
    return std::move(tmp).status();                     \
  }                                                     \
  lhs = std::move(tmp).value()

// Evaluates `expr` (a StatusOr); returns its status on error, otherwise
// assigns the value to `lhs` (which may be a declaration).
#define ASSIGN_OR_RETURN(lhs, expr) \
  KINDLING_ASSIGN_OR_RETURN_IMPL_(  \
      KINDLING_CONCAT_(kindling_statusor_, __LINE__), lhs, expr)

#endif  // KINDLING_STATUS_MACROS_H_
