// job_check.h - the checks a job file gets before anything of it is queued
//
// SYNOPSIS
//   #include "queue/job_check.h"
//
//   ASSIGN_OR_RETURN(JobFileCheck check, JobFileCheck::Start(header_line, limits));
//   RETURN_IF_ERROR(check.CheckTimes(now));              // a new job only
//   absl::StatusOr<Recipient> r = check.CheckRecipient(line);   // each line
//   absl::Status verdict = check.Finish();               // after the last line
//   std::vector<LackingVariable> lacking = check.Lacking();
//
//   absl::StatusOr<JobFileReport> CheckJobFile(const std::string& path,
//       std::string_view shown_as, const JobLimits& limits, absl::Time now,
//       const std::function<void(const RejectedLine&)>& on_rejected);
//
// DESCRIPTION
//   Intake (queue/spool.cc) and `volleyctl check` (tools/volleyctl) run the same
//   checks through this class, so both give the same messages:
//   - line 1: ParseJobHeader, the template compiled, CheckMessageHeaders;
//   - CheckTimes: an `expires` at or before now refuses the job (every recipient
//     would expire unsent); a `send_after` not before `expires` is refused by
//     ParseJobHeader already ("expires: must be later than send_after");
//   - each recipient line: ParseRecipientLine, the rendered line length
//     (Template::CheckLineLength, with the longest {{unsubscribe_token}}) and the
//     rendered unsubscribe_url; an error is that line's reject reason;
//   - Finish: a placeholder (in the message, return_path or unsubscribe_url)
//     whose variable no accepted recipient defines, and that has no default,
//     refuses the job: it is a typo ({{frist}}) or a missing column, and every
//     message would go out with a hole in it. The error names the template line
//     and suggests the closest name a recipient does define (edit distance).
//     Builtins ({{to}}, {{unsubscribe_token}}) are always defined. A job with no
//     accepted recipient passes: there is nothing to send wrongly.
//   The "undefined" verdict is known only after the last line, while intake
//   streams the file and writes recipients as it goes: Spool::Intake checks it
//   before the job's commit, so a refused job was never ready, and drops what it
//   had written (Queue::ForgetJob).
//
//   Defined and lacking: a recipient defines a variable when its "vars" has the
//   name, even with an empty value (so a typo check does not depend on data); it
//   lacks the variable when the name is missing or the value is empty, as both
//   render the placeholder's default (or nothing). Lacking() counts, for each
//   variable the job's placeholders use, the accepted recipients lacking it.
//
// CONTRACT
//   A JobFileCheck is one job's, used by one thread. No I/O except CheckJobFile,
//   which reads the file and writes nothing.
//
// DIAGNOSTICS
//   InvalidArgument, "<field>: <reason>" as queue/job.h's, the caller prefixing
//   "<file>:<line>: ":
//     expires: 2026-01-01T00:00:00Z is in the past (now 2026-12-06T20:00:00Z);
//       every recipient would expire unsent
//     message: line 3: {{frist}}: no recipient defines "frist" and the
//       placeholder has no default; did you mean "first"?
//   Finish lists at most kMaxUndefinedListed placeholders, then "and N more".
//   CheckJobFile returns the file's open or read error (errno text), or the
//   job's refusal with its "<shown_as>:<line>: " prefix, as intake's .error has.
//
// BOUNDS
//   Names recipients define are remembered for suggestions up to
//   kMaxRememberedNames distinct names (the rest are still checked, only not
//   suggested); the counts are one pair of integers per template variable.
//
// SEE ALSO
//   queue/job.h, queue/template.h, queue/spool.h, docs/jobs.md, docs/volleyctl.md.
#ifndef VOLLEY_QUEUE_JOB_CHECK_H_
#define VOLLEY_QUEUE_JOB_CHECK_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "queue/job.h"
#include "queue/job_reader.h"
#include "queue/template.h"

namespace volley::queue {

// Distinct variable names remembered for "did you mean" (see BOUNDS).
inline constexpr size_t kMaxRememberedNames = 4096;
// Undefined placeholders named in one refusal.
inline constexpr size_t kMaxUndefinedListed = 5;

// LackingVariable - a variable the template uses and some recipients lack.
struct LackingVariable {
  std::string name;
  uint64_t recipients = 0;   // accepted recipients lacking it
  bool has_default = false;  // every placeholder for it has a default
};

class JobFileCheck {
 public:
  // Start - check line 1 (see DESCRIPTION). The error is "<field>: <reason>".
  static absl::StatusOr<JobFileCheck> Start(std::string_view header_line,
                                            const JobLimits& limits);

  JobFileCheck(JobFileCheck&&) noexcept;
  JobFileCheck& operator=(JobFileCheck&&) noexcept;
  ~JobFileCheck();

  // CheckTimes - an expires at or before `now`.
  absl::Status CheckTimes(absl::Time now) const;

  // CheckRecipient - one non-blank recipient line; the error is its reject reason.
  // An accepted recipient is counted for Finish and Lacking.
  absl::StatusOr<Recipient> CheckRecipient(std::string_view line);

  // TooLongReason - the reject reason of a line over JobLimits::max_recipient_line.
  std::string TooLongReason() const;

  // Finish - the verdict once every line was seen (undefined placeholders).
  absl::Status Finish() const;

  // Lacking - variables some accepted recipients lack, most lacked first.
  std::vector<LackingVariable> Lacking() const;

  uint64_t accepted() const;
  const JobHeader& header() const;
  const Template& tpl() const;

 private:
  struct State;
  explicit JobFileCheck(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// FormatLacking - "first 12 (rendered empty), city 3 (default used)", at most
// `max_listed` variables, then ", and N more"; "" when nothing is lacking.
std::string FormatLacking(const std::vector<LackingVariable>& lacking, size_t max_listed);

// EditDistance - Levenshtein distance between two names, capped: any distance
// over `cap` is reported as cap + 1 (names are at most 64 octets anyway).
size_t EditDistance(std::string_view a, std::string_view b, size_t cap = 64);

// ClosestName - the candidate nearest to `name` within a distance worth
// suggesting (1 for a name of up to 4 octets, else 2), the first of equals; ""
// when none is that close.
std::string_view ClosestName(std::string_view name, const std::vector<std::string>& candidates);

// The refusals of a file as a whole, before or beside its lines' checks.
inline constexpr std::string_view kEmptyJobFileReason = "header: empty file";
inline constexpr std::string_view kTooManyLinesReason = "job: too many lines";
std::string HeaderTooLongReason(const JobLimits& limits);

// HeaderLine - line 1 of a job file as ReadHeaderLine found it: the line, or,
// when `refusal` is not empty, why the file is refused at line 1.
struct HeaderLine {
  std::string line;
  std::string refusal;
};

// ReadHeaderLine - line 1 through `reader` (intake and `volleyctl check` read
// it alike); an error only when the read itself fails (`path` names it).
absl::StatusOr<HeaderLine> ReadHeaderLine(LineReader& reader, const JobLimits& limits,
                                          std::string_view path);

// RejectedLine - a recipient line a check (or intake) skips.
struct RejectedLine {
  uint64_t line = 0;
  std::string_view reason;
  std::string_view text;  // the line as read ("" when it was too long to keep)
};

// JobFileReport - what CheckJobFile found in a file intake would accept.
struct JobFileReport {
  std::string job;
  uint64_t accepted = 0;
  uint64_t rejected = 0;
  std::vector<LackingVariable> lacking;
};

// CheckJobFile - every check intake makes, on a file, without a queue: what
// `volleyctl check` runs. Reads the file as intake does (queue/job_reader.h);
// each rejected line goes to on_rejected as it is found. `shown_as` is the file's
// name in messages. `header_check`, when set, is run where intake runs
// Spool::SetJobCheck's (volleyd's key checks). The suppression list is not
// looked at (it needs volleyd's database).
using HeaderCheck = std::function<absl::Status(const JobHeader&, const Template&)>;
absl::StatusOr<JobFileReport> CheckJobFile(
    const std::string& path, std::string_view shown_as, const JobLimits& limits, absl::Time now,
    const std::function<void(const RejectedLine&)>& on_rejected,
    const HeaderCheck& header_check = nullptr);

}  // namespace volley::queue

#endif  // VOLLEY_QUEUE_JOB_CHECK_H_
