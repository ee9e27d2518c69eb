// Small local status-propagation macros. Debian's Abseil 20220623 ships no public
// RETURN_IF_ERROR / ASSIGN_OR_RETURN, so the project defines its own, once, here.
#ifndef GLIMPSE_COMMON_STATUS_MACROS_H_
#define GLIMPSE_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define GLIMPSE_STATUS_CONCAT_INNER(a, b) a##b
#define GLIMPSE_STATUS_CONCAT(a, b) GLIMPSE_STATUS_CONCAT_INNER(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status glimpse_status_ = (expr);           \
    if (!glimpse_status_.ok()) return glimpse_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F());` evaluates F() (an absl::StatusOr<T>); on error returns its
// status, else move-assigns the value to the left-hand side.
#define ASSIGN_OR_RETURN(lhs, expr) \
  GLIMPSE_ASSIGN_OR_RETURN_IMPL(GLIMPSE_STATUS_CONCAT(glimpse_statusor_, __LINE__), lhs, expr)

#define GLIMPSE_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // GLIMPSE_COMMON_STATUS_MACROS_H_
