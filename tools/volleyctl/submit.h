// submit.h - volleyctl submit: a job file from a message template and a CSV list
//
// SYNOPSIS
//   #include "tools/volleyctl/submit.h"
//
//   SubmitRequest req;
//   req.from = "news@sender.test";
//   req.template_path = "spring.eml";        // headers, empty line, body; {{var}}s
//   req.recipients_path = "recipients.csv";  // header row names the variables
//   req.spool = "/var/spool/volley";
//   ASSIGN_OR_RETURN(SubmitResult r,
//                    Submit(req, &config, absl::Now(), [](const std::string& bad) {
//                      fprintf(stderr, "%s\n", bad.c_str());   // "recipients.csv:14: ..."
//                    }));
//   printf("%s\n", r.job_id.c_str());
//
// DESCRIPTION
//   The CSV's header row names the columns; each further row is one recipient:
//   its address column (address_column, else the first of "email" and
//   "address") is the recipient's "to", and every column, that one included, is
//   a variable of the same name (an empty cell is a variable with an empty value:
//   the placeholder's default is used). The template file is the job's
//   "message", byte for byte.
//
//   The job file is built row by row and each line is checked with intake's own
//   code (queue/job_check.h JobFileCheck: the header, the template, each
//   recipient line, then the undefined-placeholder verdict; with a config, its
//   key checks, engine/compose.h Credentials::CheckJob), so whatever intake or
//   `volleyctl check` would refuse is refused here with the same reason. A bad
//   row (a CSV error, a wrong field count, an empty address, a line intake would
//   reject) goes to on_bad_row as "<recipients>:<line>: <reason>" with the CSV
//   line it starts on, and is left out. The good rows are the job unless
//   `strict`, where any bad row refuses the whole file.
//
//   The file is written to <spool>/tmp/, fsynced, and renamed to
//   <spool>/incoming/<job>.job with renameat2(RENAME_NOREPLACE): an existing
//   file there is never replaced; then incoming/ is fsynced. A job id found in
//   incoming/<id>.job or in the header of a file in accepted/ is refused before
//   anything is written. Nothing is left in tmp/ on any error.
//
//   NewJobId: "<UTC time>-<CSV file's stem>-<8 hex digits>", e.g.
//   "20261206T231500Z-recipients-5f0c2a91": sorts by submission time in `ls`,
//   names its list, and two submits in the same second still differ.
//
// BOUNDS
//   Template: queue::JobLimits::max_header_line (16 MiB) as a job header line.
//   CSV: CsvLimits (csv.h); read in 64 KiB chunks, never whole: memory is one
//   row and the output buffer (kSubmitWriteBuffer), whatever the list's size.
//
// DIAGNOSTICS
//   Bad rows (on_bad_row), "<recipients>:<line>: " then:
//     a CsvReader error (csv.h)
//     has 3 fields; the header row has 4
//     email: empty address
//     email (to): invalid address        (intake's "to: ..." names the column)
//     vars.first: contains CR or LF      (intake's reason as it is)
//   Errors:
//     InvalidArgument: the job is refused: "<field>: <reason>" as intake's
//       (e.g. "message: line 3: unclosed {{", the template's line 3), a header
//       row without the address column or with a column that is not a variable
//       name, "no good rows: nothing submitted", "--strict: N bad rows".
//     AlreadyExists: the job id is in incoming/ or accepted/ (named).
//     NotFound / Unavailable: an unreadable file or a spool without incoming/
//       or tmp/ (errno text, the path named).
#ifndef VOLLEY_TOOLS_VOLLEYCTL_SUBMIT_H_
#define VOLLEY_TOOLS_VOLLEYCTL_SUBMIT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/config.h"
#include "tools/volleyctl/csv.h"

namespace volley::ctl {

// Bytes of job file kept before a write(2): the output's only buffer.
inline constexpr size_t kSubmitWriteBuffer = size_t{1} << 20;
// Bytes of the CSV read at a time.
inline constexpr size_t kSubmitReadChunk = size_t{64} << 10;

struct SubmitRequest {
  std::string from;             // --from: the job's "from"
  std::string template_path;    // --template: the job's "message"
  std::string recipients_path;  // --recipients: the CSV
  std::string job_id;           // --job; "" for NewJobId
  std::string send_after;       // --send-after (RFC 3339); "" for none
  std::optional<int> priority;  // --priority 0..9
  std::string address_column;   // --address-column; "" for "email" or "address"
  bool strict = false;          // --strict: any bad row refuses the file
  std::string spool;            // volleyd's [paths] spool
  CsvLimits csv_limits;
};

struct SubmitResult {
  std::string job_id;
  std::string path;         // <spool>/incoming/<job>.job
  uint64_t recipients = 0;  // good rows, in the job
  uint64_t bad_rows = 0;    // reported and left out
};

// Submit - see DESCRIPTION. `config` may be null (no key checks).
absl::StatusOr<SubmitResult> Submit(const SubmitRequest& request, const engine::Config* config,
                                    absl::Time now,
                                    const std::function<void(const std::string&)>& on_bad_row);

// NewJobId - see DESCRIPTION; `random` gives the hex digits. Pure.
std::string NewJobId(std::string_view recipients_path, absl::Time now, uint32_t random);

// JobHeaderLine - line 1 of the job file (JSON, no line end). Pure.
std::string JobHeaderLine(const SubmitRequest& request, std::string_view job_id,
                          std::string_view message);

// RecipientLine - one recipient line (JSON, no line end): "to" from fields[address],
// every column a variable. fields.size() must be columns.size(). Pure.
std::string RecipientLine(const std::vector<std::string>& columns, size_t address,
                          const std::vector<std::string>& fields);

}  // namespace volley::ctl

#endif  // VOLLEY_TOOLS_VOLLEYCTL_SUBMIT_H_
