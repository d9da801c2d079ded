// csv.h - an RFC 4180 CSV reader for recipient lists, fed in chunks, bounded
//
// SYNOPSIS
//   #include "tools/volleyctl/csv.h"
//
//   CsvReader reader(CsvLimits{}, [](CsvRecord&& r) {
//     if (!r.error.empty()) Report(r.line, r.error);   // a bad row: skip it
//     else Use(r.line, r.fields);
//   });
//   RETURN_IF_ERROR(reader.Feed(chunk));   // any split of the file, any number of times
//   RETURN_IF_ERROR(reader.Finish());      // the last record, if it has no line end
//
// DESCRIPTION
//   RFC 4180 as spreadsheets write it: fields separated by commas, records by
//   CRLF or LF; a field in double quotes may hold commas, CR, LF and "" (one
//   quote). A UTF-8 byte order mark at the very start is skipped. Quoted values
//   keep their CR and LF bytes as written: the caller decides what they may be
//   (a job refuses them in variables, so they cannot reach a header).
//
//   Each record is reported once, in order, with the line it starts on (lines
//   counted from 1 by LF, those inside quoted fields included, so the number is
//   what an editor shows). A record that breaks a rule is still reported, with
//   `error` set and its fields unspecified, and reading resumes at the next
//   record: one bad row never hides the rest. The rules:
//     - a quote inside an unquoted field, or text after a closing quote;
//     - a quoted field still open at the end of the input;
//     - a bare CR (not before LF) outside quotes;
//     - a field that is not valid UTF-8 (base::Utf8SequenceLength's rules);
//     - a field over max_field, a record over max_record octets, or more than
//       max_fields fields.
//   Blank lines (a line end with nothing before it) are not records; neither is
//   the end of the input right after a line end.
//
//   Pure: no I/O, no clock, no globals. The same input gives the same records
//   however it is split into Feed calls (tests/fuzz/fuzz_csv.cc checks this).
//
// BOUNDS
//   Memory: one record's fields, at most max_record octets, whatever the input.
//   Records: at most max_records; the next one makes Feed fail.
//
// DIAGNOSTICS
//   CsvRecord::error, printable ASCII without a line number (the caller adds
//   "<file>:<line>: "):
//     field 3: a quote inside an unquoted field (quote the whole field and write "" for a quote)
//     field 2: text after the closing quote
//     field 1: quoted field not closed before the end of the file
//     field 2: a CR not followed by LF
//     field 4: not valid UTF-8 (octet 7)
//     field 2: longer than 65536 octets
//     longer than 65536 octets
//     more than 1000 fields
//   Feed: ResourceExhausted "more than N records" once past max_records.
//   Finish and Feed after Finish: FailedPrecondition.
#ifndef VOLLEY_TOOLS_VOLLEYCTL_CSV_H_
#define VOLLEY_TOOLS_VOLLEYCTL_CSV_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace volley::ctl {

// CsvLimits - the bounds (see BOUNDS). The defaults fit a job file: a recipient
// line is at most 64 KiB (queue::JobLimits::max_recipient_line) and a variable
// value 4 KiB, so a longer field could never become a recipient anyway; the
// field bound is higher so that intake's own message says why.
struct CsvLimits {
  size_t max_field = size_t{64} << 10;
  size_t max_record = size_t{64} << 10;
  size_t max_fields = 1000;
  uint64_t max_records = 10'000'000;
};

// CsvRecord - one record as read.
struct CsvRecord {
  uint64_t line = 0;                // where it starts, from 1
  std::vector<std::string> fields;  // unspecified when error is set
  std::string error;                // empty for a good record
};

class CsvReader {
 public:
  using OnRecord = std::function<void(CsvRecord&&)>;

  CsvReader(const CsvLimits& limits, OnRecord on_record);

  // Feed - the next bytes of the input; records completed by them are reported.
  absl::Status Feed(std::string_view bytes);
  // Finish - the end of the input: reports the last record if it had no line end.
  absl::Status Finish();

  uint64_t records() const { return records_; }

 private:
  enum class State { kRecordStart, kFieldStart, kUnquoted, kQuoted, kQuoteInQuoted, kAfterCr };

  absl::Status Byte(char c);
  void Append(char c);
  void EndField();
  absl::Status EndRecord();
  void Fail(std::string why);
  std::string FieldName() const;
  absl::Status ReplayBom();

  CsvLimits limits_;
  OnRecord on_record_;
  State state_ = State::kRecordStart;
  // The byte order mark's octets matched so far, until the start is past.
  size_t bom_matched_ = 0;
  bool bom_done_ = false;
  State state_before_cr_ = State::kRecordStart;  // where a CR outside quotes came
  uint64_t line_ = 1;          // the line the next byte is on
  uint64_t records_ = 0;
  size_t record_bytes_ = 0;    // field octets of the current record
  std::string field_;
  CsvRecord record_;
  bool failed_ = false;        // record_.error is set: keep nothing until its end
  bool finished_ = false;
};

}  // namespace volley::ctl

#endif  // VOLLEY_TOOLS_VOLLEYCTL_CSV_H_
