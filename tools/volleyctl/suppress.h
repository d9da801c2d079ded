// NAME
//   suppress.h - volleyctl suppress: the suppression list's CSV, import lines and output
//
// SYNOPSIS
//   ImportReader reader("list.csv", defaults);
//   for (auto line = reader.Next(text_line); ...)        // one physical line at a time
//     line.ok() ? batch.push_back(line->json) : errors.push_back(line.status())
//   ASSIGN_OR_RETURN(SuppressionPage page, ParseSuppressionPage(body));
//   out += SuppressionCsvHeader(); for (row : page.rows) out += SuppressionCsvRow(row);
//
// DESCRIPTION
//   What volleyctl suppress reads and writes, apart from the HTTP: pure, so the
//   unit tests reach it without a daemon. The list itself is volleyd's
//   (engine/admin.h, /suppressions); volleyctl never opens its database, so
//   that one process owns it.
//
//   Export writes CSV (RFC 4180): the header line
//   "address,scope,reason,source,added,expires", then one record per entry,
//   CRLF line ends, a field quoted (with '"' doubled) when it holds a comma, a
//   quote, a space at either end, or a CR or LF; times RFC 3339 UTC, expires
//   empty for never.
//
//   Import reads either that CSV (recognised by its header line: the same six
//   names, any case) or one address a line (an address, or "@domain"; blank
//   lines and lines starting with '#' are skipped). In the CSV, empty scope,
//   reason, source, added or expires take the defaults (--scope, --reason,
//   --expires; the source "import FILE line N"; added now), so an export
//   imports back as it was. A record may not span lines: the list's fields
//   hold no CR or LF.
//
// BOUNDS
//   kMaxImportLine (4 KiB) per line: longer is a bad line, skipped. The
//   addresses themselves are checked by volleyd (queue/suppression.h).
//
// DIAGNOSTICS
//   A bad line is InvalidArgument "FILE:N: why": "expected 6 fields, got 4",
//   "unterminated quote", "not an address", "longer than 4096 octets".
#ifndef VOLLEY_TOOLS_VOLLEYCTL_SUPPRESS_H_
#define VOLLEY_TOOLS_VOLLEYCTL_SUPPRESS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace volley::ctl {

inline constexpr size_t kMaxImportLine = 4096;
// Entries sent in one POST /suppressions: below the admin API's batch bound
// (kAdminMaxSuppressionBatch, 5000) and its body bound (4 MiB) at the longest
// entries.
inline constexpr size_t kImportBatch = 2000;
// Entries asked for in one GET /suppressions by list and export.
inline constexpr size_t kExportPage = 5000;

// CsvField - `value` as one RFC 4180 field, quoted when it must be.
std::string CsvField(std::string_view value);

// ParseCsvLine - the fields of one CSV record on one line (without its line
// end). InvalidArgument "unterminated quote" or "text after a closing quote".
absl::StatusOr<std::vector<std::string>> ParseCsvLine(std::string_view line);

// One entry as volleyd answers it (engine/admin.h); expires "" for never.
struct SuppressionRow {
  std::string address, scope, reason, source, added, expires;
};

// The header line export writes and import recognises.
std::string SuppressionCsvHeader();
// SuppressionCsvRow - one record, CRLF-terminated.
std::string SuppressionCsvRow(const SuppressionRow& row);

// SuppressionPage - a GET /suppressions answer.
struct SuppressionPage {
  std::vector<SuppressionRow> rows;
  bool more = false;          // "next" was not null
  std::string after, after_scope;
  uint64_t approximate_count = 0;
};
absl::StatusOr<SuppressionPage> ParseSuppressionPage(std::string_view body);

// ParseCheckAnswer - a GET /suppressions/check answer: the entry, or nullopt
// when the address is not suppressed.
absl::StatusOr<std::optional<SuppressionRow>> ParseCheckAnswer(std::string_view body);

// FormatSuppression - "key: value" lines, for check.
std::string FormatSuppression(const SuppressionRow& row);

// FormatSuppressionTable - rows as aligned columns (with a header line when
// `header`), for list. Control bytes are shown as '?'.
std::string FormatSuppressionTable(const std::vector<SuppressionRow>& rows, bool header);

// QueryEscape - `value` percent-encoded for a query (all but A-Z a-z 0-9 - . _ ~).
std::string QueryEscape(std::string_view value);

// SuppressionEntryJson - the POST body object of one entry (empty fields left out).
std::string SuppressionEntryJson(const SuppressionRow& row);

// ImportAnswer - a POST /suppressions batch answer: how many were added, and
// the index in the batch and the reason of each entry volleyd refused.
struct ImportAnswer {
  uint64_t added = 0;
  std::vector<std::pair<size_t, std::string>> errors;
};
absl::StatusOr<ImportAnswer> ParseImportAnswer(std::string_view body);

// ImportDefaults - what an import line leaves out.
struct ImportDefaults {
  std::string scope;
  std::string reason = "manual";
  std::string expires;  // "" never, or what --expires said ("30d", RFC 3339)
};

// ImportReader - the lines of one import file, in order.
class ImportReader {
 public:
  ImportReader(std::string file, ImportDefaults defaults)
      : file_(std::move(file)), defaults_(std::move(defaults)) {}

  struct Line {
    uint64_t number = 0;
    bool skip = false;       // blank, a comment, or the CSV header
    SuppressionRow entry;    // when not skipped
  };
  // Next - the next physical line (without its LF; a CR before it is
  // dropped here). A bad line is InvalidArgument "FILE:N: why".
  absl::StatusOr<Line> Next(std::string_view text);

  // SkipTooLong - count a line over kMaxImportLine (the caller did not keep
  // it) and return its error.
  absl::Status SkipTooLong();

  bool csv() const { return csv_; }

 private:
  std::string file_;
  ImportDefaults defaults_;
  uint64_t number_ = 0;
  bool csv_ = false;
};

}  // namespace volley::ctl

#endif  // VOLLEY_TOOLS_VOLLEYCTL_SUPPRESS_H_
