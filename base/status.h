// status.h - small helpers around absl::Status shared by every Volley folder
//
// SYNOPSIS
//   RETURN_IF_ERROR(expr);              // return expr's status when it is not OK
//   ASSIGN_OR_RETURN(lhs, expr);        // lhs = *expr, or return expr's status
//   VOLLEY_CHECK(cond) << ...;          // not a stream: VOLLEY_CHECK(cond, "why")
//
// DESCRIPTION
//   Anything that can fail for an outside reason (a file, the config, the kernel, the
//   disk, a job file) returns absl::Status or absl::StatusOr. A broken internal
//   invariant is not such a failure: VOLLEY_CHECK prints where and why and aborts, as
//   Postfix's msg_panic does, because carrying on with corrupt state could lose mail.
//
//   base/ knows nothing of mail (like Postfix's util/): Debian 12's abseil has no
//   absl/log, so the few macros every folder needs live here.
#ifndef VOLLEY_BASE_STATUS_H_
#define VOLLEY_BASE_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace volley::base {

// CheckFailed - report a broken invariant and abort. Never returns.
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              std::string_view why);

}  // namespace volley::base

#define VOLLEY_CHECK(cond, why)                                          \
  do {                                                                   \
    if (!(cond)) ::volley::base::CheckFailed(__FILE__, __LINE__, #cond, why); \
  } while (0)

#define RETURN_IF_ERROR(expr)                 \
  do {                                        \
    ::absl::Status volley_status_ = (expr);   \
    if (!volley_status_.ok()) return volley_status_; \
  } while (0)

#define VOLLEY_CONCAT_INNER_(a, b) a##b
#define VOLLEY_CONCAT_(a, b) VOLLEY_CONCAT_INNER_(a, b)
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(VOLLEY_CONCAT_(volley_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                           \
  if (!statusor.ok()) return statusor.status();     \
  lhs = std::move(statusor).value()

#endif  // VOLLEY_BASE_STATUS_H_
