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
//   Split (split = N > 1; docs/cluster.md): the same job as N job files, one
//   per node of a cluster, each node taking the files of its own spool. Part k
//   (1..N) is job "<id>-k", with the same header otherwise, and gets its share
//   of the good rows, each row in exactly one part:
//     SplitBy::kRecipient (the default): dealt round robin, so the parts differ
//       by at most one recipient whatever the mix of domains. Each node then
//       sends to every domain; a cluster-wide limit ([cluster]) is what keeps
//       their sum to it.
//     SplitBy::kDomain: every recipient of a domain in the same part
//       (PartOfDomain: a fixed hash of the lower-cased domain, so a domain
//       goes to the same node in every job). For node-scoped limits, or fewer
//       connections per destination; the parts are as uneven as the list (one
//       big provider makes one big part).
//   The parts go to N spools (`spools`, in order: part k to spools[k-1]), each
//   the way a single job goes, or to one folder (`out_dir`) as plain files
//   <id>-k.job, to be copied to the nodes (written under a dot-name first).
//   A part that gets no recipient is not written (SubmitPart::path empty).
//   Every part is checked for an existing file before anything is written;
//   the parts are renamed into place one after another at the end, so a
//   failure there (a full disk) names the parts already in place.
//
//   NewJobId: "<UTC time>-<CSV file's stem>-<8 hex digits>", e.g.
//   "20261206T231500Z-recipients-5f0c2a91": sorts by submission time in `ls`,
//   names its list, and two submits in the same second still differ.
//
// BOUNDS
//   Template: queue::JobLimits::max_header_line (16 MiB) as a job header line.
//   CSV: CsvLimits (csv.h); read in 64 KiB chunks, never whole: memory is one
//   row and the output buffer (kSubmitWriteBuffer) per part, whatever the
//   list's size. Parts: at most kMaxSplit (so at most 64 MiB of buffers and 64
//   open files).
//
// DIAGNOSTICS
//   Bad rows (on_bad_row), "<recipients>:<line>: " then:
//     a CsvReader error (csv.h)
//     has 3 fields; the header row has 4
//     email: empty address
//     email (to): invalid address        (intake's "to: ..." names the column)
//     vars.first: contains CR or LF      (intake's reason as it is)
//   Errors:
//     InvalidArgument: --split out of 1..kMaxSplit, or not as many spools as
//       parts ("--split 3 needs 3 spools (--spool DIR1,DIR2,...) ... 2 given").
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
// The most parts --split makes: a cluster far larger than Volley's use, and
// each part holds a write buffer and a file open while the list is read.
inline constexpr int kMaxSplit = 64;

// SplitBy - how --split deals the recipients (DESCRIPTION, "Split").
enum class SplitBy { kRecipient, kDomain };
std::string_view SplitByName(SplitBy by);
// ParseSplitBy - "recipient" or "domain"; InvalidArgument naming --split-by.
absl::StatusOr<SplitBy> ParseSplitBy(std::string_view name);
// PartOfDomain - the part (0..parts-1) of a domain's recipients under
// SplitBy::kDomain; case does not matter. Pure.
uint32_t PartOfDomain(std::string_view domain, uint32_t parts);

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
  // --split N (1: one job, in `spool`); the parts go to `spools` (N of them) or
  // to `out_dir`. Either of those also makes a split of 1 a part "<id>-1".
  int split = 1;
  SplitBy split_by = SplitBy::kRecipient;
  std::vector<std::string> spools;
  std::string out_dir;
};

// SubmitPart - one job file written (or, with no recipient, not: path "").
struct SubmitPart {
  std::string job_id;
  std::string path;
  uint64_t recipients = 0;
};

struct SubmitResult {
  std::string job_id;       // the job's id; a split's parts are "<job_id>-k"
  std::string path;         // <spool>/incoming/<job>.job; "" for a split
  uint64_t recipients = 0;  // good rows, in the job (all parts)
  uint64_t bad_rows = 0;    // reported and left out
  std::vector<SubmitPart> parts;  // one without a split
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
