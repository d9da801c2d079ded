// job_file.h - volleyctl check and render: a job file looked at without volleyd
//
// SYNOPSIS
//   #include "tools/volleyctl/job_file.h"
//
//   absl::StatusOr<CheckReport> CheckFile(const std::string& path, const engine::Config* config,
//                                         absl::Time now, std::string* rejected_lines);
//   std::string FormatCheckReport(const std::string& path, const CheckReport& report);
//
//   ASSIGN_OR_RETURN(RenderedRecipient r, RenderLine(path, 12, config, now));
//   fwrite(r.message...);   // what the recipient on line 12 would receive
//
// DESCRIPTION
//   check runs the checks intake runs (queue/job_check.h, the same code: the
//   same messages as the .error and .rejects.jsonl intake would write) and,
//   given volleyd's config, the key checks volleyd adds (engine/compose.h
//   Credentials::CheckJob). It reads the file once, in bounded memory, and
//   writes nothing. What it cannot know offline: the suppression list, whether
//   the job id was used already, and the free space of volleyd's disks.
//
//   render composes one recipient's message as a shard would
//   (engine::Composer::Compose, the same code): Message-ID, Date, Volley-Trace,
//   List-Unsubscribe, List-Id, Feedback-ID, the job's headers, the template
//   rendered for the recipient, and a DKIM-Signature per [[dkim]] key of the
//   config that signs the From domain. Values that differ from one send to the
//   next: the Message-ID's random part, Date, the tokens (unsubscribe, trace,
//   VERP: they carry the job number intake assigns, 0 here) and so the
//   signatures. The server is taken to offer 8BITMIME and SMTPUTF8 (no 7-bit
//   downgrade). Dot-stuffing is the SMTP client's and is not shown.
//
// CONTRACT
//   Reads the job file and the key files the config names; no network, no volleyd.
//
// DIAGNOSTICS
//   CheckFile: the job's refusal, InvalidArgument "<path>:<line>: <reason>" as
//   intake's .error; an errno error for an unreadable file. RenderLine:
//   InvalidArgument "<path>:<line>: <reason>" for a line intake would reject
//   (the reason as in .rejects.jsonl) or a refused header, "<path>: has no line
//   N", "<path>:1: line 1 is the job header, not a recipient".
//
// BOUNDS
//   queue::JobLimits defaults, as volleyd's intake: lines are read through
//   queue/job_reader.h, never whole files; rejected lines are printed as found.
#ifndef VOLLEY_TOOLS_VOLLEYCTL_JOB_FILE_H_
#define VOLLEY_TOOLS_VOLLEYCTL_JOB_FILE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/config.h"
#include "queue/job_check.h"

namespace volley::ctl {

// CheckReport - what a job file would give at intake.
struct CheckReport {
  queue::JobFileReport file;
};

// CheckFile - see DESCRIPTION; each rejected line goes to on_rejected as
// "<path>:<line>: rejected: <reason>" when it is found. `config` may be null (no key checks).
absl::StatusOr<CheckReport> CheckFile(const std::string& path, const engine::Config* config,
                                      absl::Time now,
                                      const std::function<void(const std::string&)>& on_rejected);

// FormatCheckReport - "<path>: job \"x\" would be accepted: 3 recipients, 1 rejected;
// lacking variables: first 1 (default used)\n".
std::string FormatCheckReport(const std::string& path, const CheckReport& report);

// RenderedRecipient - one recipient's transaction.
struct RenderedRecipient {
  std::string mail_from;
  std::string rcpt;
  std::string message;  // CRLF line ends, as sent before dot-stuffing
};

// RenderLine - the message for the recipient on file line `line` (from 1).
absl::StatusOr<RenderedRecipient> RenderLine(const std::string& path, uint64_t line,
                                             const engine::Config& config, absl::Time now);

}  // namespace volley::ctl

#endif  // VOLLEY_TOOLS_VOLLEYCTL_JOB_FILE_H_
