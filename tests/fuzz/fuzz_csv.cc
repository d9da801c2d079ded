// fuzz_csv - libFuzzer target for volleyctl submit's CSV reader (tools/volleyctl/csv.h)
//
// INPUT
//   byte 0: the limits (bit 0: small ones, so that every bound is reached by short
//   inputs) and the chunk size for the third reading (bits 1-7, plus 1); then the CSV.
//
// DESCRIPTION
//   The CSV is read three times: whole, one byte at a time, and in chunks of the size
//   byte 0 gives. csv.h promises the same records however the input is split, so the
//   three readings must agree exactly (fields, errors, lines, and whether the record
//   limit stopped them). Every record, against csv.h's contract:
//     - lines strictly increase from 1 and never pass 1 + the LF count of the input;
//     - a good record has 1..max_fields fields, each valid UTF-8 and at most
//       max_field octets, together at most max_record;
//     - a bad record has an error of printable ASCII, short (no input echoed);
//   and a good record's fields, written back as CSV (every field quoted, "" for a
//   quote), read back as the same single record.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "base/strings.h"
#include "tools/volleyctl/csv.h"

namespace {

using volley::ctl::CsvLimits;
using volley::ctl::CsvReader;
using volley::ctl::CsvRecord;

[[noreturn]] void Broken(int line, const char* rule) {
  std::fprintf(stderr, "fuzz_csv: invariant broken (line %d): %s\n", line, rule);
  std::abort();
}

#define EXPECT(cond)                      \
  do {                                    \
    if (!(cond)) Broken(__LINE__, #cond); \
  } while (0)

// The longest error: the longest fixed text and a few numbers, never the input.
constexpr size_t kMaxError = 120;

struct Reading {
  std::vector<CsvRecord> records;
  absl::StatusCode end = absl::StatusCode::kOk;
};

Reading Read(std::string_view text, const CsvLimits& limits, size_t chunk) {
  Reading out;
  CsvReader reader(limits, [&](CsvRecord&& r) { out.records.push_back(std::move(r)); });
  for (size_t i = 0; i < text.size(); i += chunk) {
    absl::Status s = reader.Feed(text.substr(i, chunk));
    if (!s.ok()) {
      EXPECT(s.code() == absl::StatusCode::kResourceExhausted);
      out.end = s.code();
      return out;
    }
  }
  absl::Status s = reader.Finish();
  EXPECT(s.ok() || s.code() == absl::StatusCode::kResourceExhausted);
  out.end = s.code();
  return out;
}

bool IsUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = volley::base::Utf8SequenceLength(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

bool Same(const Reading& a, const Reading& b) {
  if (a.end != b.end || a.records.size() != b.records.size()) return false;
  for (size_t i = 0; i < a.records.size(); ++i) {
    const CsvRecord& x = a.records[i];
    const CsvRecord& y = b.records[i];
    if (x.line != y.line || x.error != y.error) return false;
    if (x.error.empty() && x.fields != y.fields) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  CsvLimits limits;
  if (data[0] & 1) {
    limits.max_field = 8;
    limits.max_record = 20;
    limits.max_fields = 4;
    limits.max_records = 6;
  }
  const size_t chunk = (data[0] >> 1) + 1;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  const Reading whole = Read(text, limits, text.size() + 1);
  EXPECT(Same(whole, Read(text, limits, 1)));
  EXPECT(Same(whole, Read(text, limits, chunk)));

  uint64_t lfs = 0;
  for (const char c : text) lfs += c == '\n';
  EXPECT(whole.records.size() <= limits.max_records);
  uint64_t last_line = 0;
  for (const CsvRecord& r : whole.records) {
    EXPECT(r.line > last_line);
    EXPECT(r.line <= lfs + 1);
    last_line = r.line;
    if (!r.error.empty()) {
      EXPECT(r.error.size() <= kMaxError);
      for (const char c : r.error) EXPECT(c >= 0x20 && c < 0x7f);
      continue;
    }
    EXPECT(!r.fields.empty() && r.fields.size() <= limits.max_fields);
    size_t total = 0;
    for (const std::string& f : r.fields) {
      EXPECT(f.size() <= limits.max_field);
      EXPECT(IsUtf8(f));
      total += f.size();
    }
    EXPECT(total <= limits.max_record);

    // Round trip: quoted fields read back as themselves.
    std::string csv;
    for (size_t i = 0; i < r.fields.size(); ++i) {
      if (i > 0) csv += ',';
      csv += '"';
      for (const char c : r.fields[i]) {
        if (c == '"') csv += '"';
        csv += c;
      }
      csv += '"';
    }
    csv += "\r\n";
    // A record at the limit stays at it: quoting adds no field octets.
    const Reading again = Read(csv, limits, csv.size() + 1);
    EXPECT(again.records.size() == 1);
    EXPECT(again.records[0].error.empty());
    EXPECT(again.records[0].fields == r.fields);
  }
  return 0;
}
