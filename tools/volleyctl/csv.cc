#include "tools/volleyctl/csv.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace volley::ctl {
namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";

// FirstBadUtf8 - the 1-based octet where `s` stops being UTF-8, or 0.
size_t FirstBadUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = base::Utf8SequenceLength(s, i);
    if (n == 0) return i + 1;
    i += n;
  }
  return 0;
}

}  // namespace

CsvReader::CsvReader(const CsvLimits& limits, OnRecord on_record)
    : limits_(limits), on_record_(std::move(on_record)) {}

std::string CsvReader::FieldName() const {
  return absl::StrCat("field ", record_.fields.size() + 1);
}

void CsvReader::Fail(std::string why) {
  if (failed_) return;  // the first error is the one worth fixing first
  failed_ = true;
  record_.error = std::move(why);
  record_.fields.clear();
  record_.fields.shrink_to_fit();
  field_.clear();
  field_.shrink_to_fit();
}

void CsvReader::Append(char c) {
  if (failed_) return;
  if (field_.size() >= limits_.max_field) {
    Fail(absl::StrCat(FieldName(), ": longer than ", limits_.max_field, " octets"));
    return;
  }
  if (++record_bytes_ > limits_.max_record) {
    Fail(absl::StrCat("longer than ", limits_.max_record, " octets"));
    return;
  }
  field_.push_back(c);
}

void CsvReader::EndField() {
  if (failed_) return;
  if (const size_t bad = FirstBadUtf8(field_); bad != 0) {
    Fail(absl::StrCat(FieldName(), ": not valid UTF-8 (octet ", bad, ")"));
    return;
  }
  if (record_.fields.size() >= limits_.max_fields) {
    Fail(absl::StrCat("more than ", limits_.max_fields, " fields"));
    return;
  }
  record_.fields.push_back(std::move(field_));
  field_.clear();
}

absl::Status CsvReader::EndRecord() {
  if (records_ >= limits_.max_records) {
    return absl::ResourceExhaustedError(absl::StrCat("more than ", limits_.max_records, " records"));
  }
  ++records_;
  CsvRecord done = std::move(record_);
  record_ = CsvRecord{};
  field_.clear();
  record_bytes_ = 0;
  failed_ = false;
  state_ = State::kRecordStart;
  on_record_(std::move(done));
  return absl::OkStatus();
}

absl::Status CsvReader::Byte(char c) {
  if (state_ == State::kAfterCr) {
    state_ = state_before_cr_;
    if (c != '\n') {
      if (state_ == State::kRecordStart) {  // a line of nothing but a CR
        record_.line = line_;
        state_ = State::kFieldStart;
      }
      Fail(absl::StrCat(FieldName(), ": a CR not followed by LF"));
    }
  }
  if (c == '\r' && state_ != State::kQuoted) {
    state_before_cr_ = state_;
    state_ = State::kAfterCr;
    return absl::OkStatus();
  }
  absl::Status status = absl::OkStatus();
  switch (state_) {
    case State::kRecordStart:
      if (c == '\n') break;  // a blank line is no record
      record_.line = line_;
      state_ = State::kFieldStart;
      [[fallthrough]];
    case State::kFieldStart:
      if (c == '"') {
        state_ = State::kQuoted;
      } else if (c == ',') {
        EndField();
      } else if (c == '\n') {
        EndField();
        status = EndRecord();
      } else {
        Append(c);
        state_ = State::kUnquoted;
      }
      break;
    case State::kUnquoted:
      if (c == ',') {
        EndField();
        state_ = State::kFieldStart;
      } else if (c == '\n') {
        EndField();
        status = EndRecord();
      } else {
        if (c == '"') {
          Fail(absl::StrCat(FieldName(),
                            ": a quote inside an unquoted field (quote the whole field and "
                            "write \"\" for a quote)"));
        }
        Append(c);
      }
      break;
    case State::kQuoted:
      if (c == '"') {
        state_ = State::kQuoteInQuoted;
      } else {
        Append(c);
      }
      break;
    case State::kQuoteInQuoted:
      if (c == '"') {
        Append('"');
        state_ = State::kQuoted;
      } else if (c == ',') {
        EndField();
        state_ = State::kFieldStart;
      } else if (c == '\n') {
        EndField();
        status = EndRecord();
      } else {
        Fail(absl::StrCat(FieldName(), ": text after the closing quote"));
        state_ = State::kUnquoted;
      }
      break;
    case State::kAfterCr:
      break;  // handled above
  }
  if (c == '\n') ++line_;
  return status;
}

absl::Status CsvReader::ReplayBom() {
  bom_done_ = true;
  for (size_t i = 0; i < bom_matched_; ++i) {
    if (absl::Status s = Byte(kBom[i]); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CsvReader::Feed(std::string_view bytes) {
  if (finished_) return absl::FailedPreconditionError("CSV: Feed after Finish");
  for (const char c : bytes) {
    if (!bom_done_) {
      if (c == kBom[bom_matched_]) {
        if (++bom_matched_ == kBom.size()) bom_done_ = true;
        continue;
      }
      if (absl::Status s = ReplayBom(); !s.ok()) return s;
    }
    if (absl::Status s = Byte(c); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CsvReader::Finish() {
  if (finished_) return absl::FailedPreconditionError("CSV: Finish twice");
  if (!bom_done_) {
    if (absl::Status s = ReplayBom(); !s.ok()) return s;
  }
  finished_ = true;
  if (state_ == State::kAfterCr) {
    state_ = state_before_cr_;
    if (state_ == State::kRecordStart) {
      record_.line = line_;
      state_ = State::kFieldStart;
    }
    Fail(absl::StrCat(FieldName(), ": a CR not followed by LF"));
  }
  switch (state_) {
    case State::kRecordStart:
      return absl::OkStatus();
    case State::kQuoted:
      Fail(absl::StrCat(FieldName(), ": quoted field not closed before the end of the file"));
      break;
    default:
      break;
  }
  EndField();
  return EndRecord();
}

}  // namespace volley::ctl
