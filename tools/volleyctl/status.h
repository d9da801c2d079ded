// status.h - volleyctl's read side: status, destinations, queue and trace
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(std::string table, FormatDestinationsTable(r.body));   // GET /destinations
//   ASSIGN_OR_RETURN(std::string lines, FormatQueueSummary(r.body));        // GET /queue
//   StatusAnswers a = FetchStatus("127.0.0.1:9465");
//   std::string screen = FormatStatus(a, kStatusDestinations);
//   std::string json = StatusJson(a);
//
//   ASSIGN_OR_RETURN(std::vector<std::string> files, DeliveryLogFiles("var/log"));
//   RETURN_IF_ERROR(TraceRecipient(files, "ann@d1.test", "", [](std::string_view record) {...}));
//   std::string line = FormatTraceRecord(record);
//
//   std::string bar = ProgressBar(delivered, bounced, deferred, pending, 30);
//
// DESCRIPTION
//   status, destinations and queue read volleyd's admin API (engine/admin.h):
//   status asks GET /jobs, GET /destinations?all=1 and GET /queue and shows
//   each job with a progress bar, its rate and ETA, the busiest destinations
//   and the queue's totals; a call that fails is shown as an error line (or,
//   with --json, in "errors") and the rest still stands.
//
//   The progress bar has one character per 1/width of the job's total:
//   '#' delivered, 'x' bounced (expired and cancelled too: done, not sent),
//   '~' deferred (still queued, waiting for a retry), '.' pending and not
//   deferred. Each kind that has any recipient gets at least one character.
//
//   trace reads the delivery log (docs/delivery-log.md) itself, not the daemon:
//   the rotated files deliveries-YYYYMMDDTHHMMSSZ[-N].jsonl in time, then
//   counter, order, then deliveries.jsonl, each streamed a line at a time; the
//   records whose "rcpt" is the address (ASCII case ignored) and, with a job,
//   whose "job" is it, are handed on in the order written.
//
// BOUNDS
//   A delivery log line over kMaxTraceLine is skipped (it is not a record
//   volleyd writes); memory is one line. status shows kStatusDestinations
//   destinations.
//
// DIAGNOSTICS
//   Format*: DataLoss "unexpected answer from volleyd: ..." naming what is
//   missing. DeliveryLogFiles: NotFound naming the folder when it has no
//   delivery log. TraceRecipient: Unavailable naming a file it cannot read.
#ifndef VOLLEY_TOOLS_VOLLEYCTL_STATUS_H_
#define VOLLEY_TOOLS_VOLLEYCTL_STATUS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace volley::ctl {

// Longest delivery log line trace reads. Default: 1 MiB (a record is < 2 KiB).
inline constexpr size_t kMaxTraceLine = size_t{1} << 20;
// Destinations status shows. Default: 10.
inline constexpr size_t kStatusDestinations = 10;
// Destinations volleyctl destinations asks for (the admin API's default).
inline constexpr size_t kDestinationsShown = 100;
// Width of status's progress bars. Default: 30.
inline constexpr size_t kStatusBarWidth = 30;

// ProgressBar - see DESCRIPTION; `width` characters between brackets.
std::string ProgressBar(uint64_t delivered, uint64_t bounced, uint64_t deferred,
                        uint64_t pending, size_t width);

// DestinationsPath - "/destinations?all=1" or "?all=0" (the busy and the troubled).
std::string DestinationsPath(bool all, size_t limit);
// QueuePath - "/queue" with domain= and job= percent-encoded when given.
std::string QueuePath(std::string_view domain, std::string_view job);

// FormatDestinationsTable - a GET /destinations?all= answer as a table.
absl::StatusOr<std::string> FormatDestinationsTable(std::string_view body);
// FormatQueueSummary - a GET /queue answer as lines, qshape's age row included.
absl::StatusOr<std::string> FormatQueueSummary(std::string_view body);

// StatusAnswers - what status read: each answer's body, or the error instead.
struct StatusAnswers {
  std::optional<std::string> jobs, destinations, queue;
  std::vector<std::string> errors;  // "jobs: cannot connect ..."
};
// FetchStatus - the three calls status makes, to `admin`.
StatusAnswers FetchStatus(std::string_view admin);
// FormatStatus - the status screen (DESCRIPTION), `max_destinations` of them.
std::string FormatStatus(const StatusAnswers& answers, size_t max_destinations);
// StatusJson - {"jobs":[...],"destinations":[...],"queue":{...},"errors":[...]},
// each member null when its call failed.
std::string StatusJson(const StatusAnswers& answers);

// DeliveryLogFiles - the delivery log's files in `dir`, oldest first.
absl::StatusOr<std::vector<std::string>> DeliveryLogFiles(const std::string& dir);
// TraceRecipient - hand each record of `rcpt` (and of `job`, unless empty) in
// `files` to `on_record`, in order.
absl::Status TraceRecipient(const std::vector<std::string>& files, std::string_view rcpt,
                            std::string_view job,
                            const std::function<void(std::string_view record)>& on_record);
// FormatTraceRecord - one record as a line: time, status, attempt, host,
// reply, class, TLS; the line itself (made printable) if it is not JSON.
std::string FormatTraceRecord(std::string_view record);

}  // namespace volley::ctl

#endif  // VOLLEY_TOOLS_VOLLEYCTL_STATUS_H_
