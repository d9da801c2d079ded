// ctl.h - volleyctl's logic: talk to volleyd's admin API, format its answers
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(HttpResponse r, Call("127.0.0.1:9465", "GET", "/jobs", kCallTimeout));
//   ASSIGN_OR_RETURN(std::string table, FormatJobsTable(r.body));
//   ASSIGN_OR_RETURN(std::string lines, FormatJob(r.body));
//
// DESCRIPTION
//   volleyctl is a thin client of the HTTP/1.1 admin API that volleyd serves on
//   loopback (engine/admin.h, docs/volleyctl.md). Everything here but Call is
//   pure, so tests reach it without a daemon. It does not link the engine: the
//   only config key it needs, [admin] listen, is read with toml++ directly
//   (AdminFromConfig), and the engine would bring RocksDB, io_uring and OpenSSL
//   into a small CLI for nothing.
//
// BOUNDS
//   kMaxResponse (16 MiB) of answer, kCallTimeout (10 s) for the whole exchange.
//
// ERRORS
//   Call: Unavailable "cannot connect to volleyd's admin API at ADDR: REASON (is
//   volleyd running?)", DeadlineExceeded, ResourceExhausted, DataLoss (not an
//   HTTP answer). Format*: DataLoss naming what is missing from the answer.
#ifndef VOLLEY_TOOLS_VOLLEYCTL_CTL_H_
#define VOLLEY_TOOLS_VOLLEYCTL_CTL_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace volley::ctl {

// volleyd's default admin address: engine/config.h's [admin] listen default.
inline constexpr char kDefaultAdmin[] = "127.0.0.1:9465";
// Longest answer read from volleyd (a job is about 300 bytes of JSON).
inline constexpr size_t kMaxResponse = size_t{16} << 20;
// Connect, send and read, all together.
inline constexpr absl::Duration kCallTimeout = absl::Seconds(10);

struct HttpResponse {
  int status = 0;
  std::string body;
};

// Call - one request (no body) to the admin API at `admin` ("HOST:PORT").
absl::StatusOr<HttpResponse> Call(std::string_view admin, std::string_view method,
                                  std::string_view path, absl::Duration timeout);

// ParseHttpResponse - a whole answer (read until the server closed) into status
// and body; a Content-Length, when given, must match the body.
absl::StatusOr<HttpResponse> ParseHttpResponse(std::string_view raw);

// JobPath - "/jobs/ID" plus `suffix` ("/pause"), with every byte of ID that is
// not safe in a request line percent-encoded (volleyd then refuses it, 400).
std::string JobPath(std::string_view id, std::string_view suffix);

// ErrorText - the "error" member of an error answer, else the body itself.
std::string ErrorText(std::string_view body);

// FormatJobsTable - {"jobs":[...]} as a table: a header line, then one line per job.
absl::StatusOr<std::string> FormatJobsTable(std::string_view body);

// FormatJob - one job object as "key: value" lines.
absl::StatusOr<std::string> FormatJob(std::string_view body);

// AdminFromConfig - volleyd's [admin] listen from its config file, or the default
// when the file does not set it.
absl::StatusOr<std::string> AdminFromConfig(const std::string& path);

}  // namespace volley::ctl

#endif  // VOLLEY_TOOLS_VOLLEYCTL_CTL_H_
