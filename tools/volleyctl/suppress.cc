// suppress.cc - volleyctl suppress's CSV, import lines and output (see suppress.h)
#include "tools/volleyctl/suppress.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/json.h"
#include "base/strings.h"
#include "simdjson.h"
#include "tools/volleyctl/ctl.h"

namespace volley::ctl {
namespace {

namespace dom = simdjson::dom;

constexpr std::string_view kColumns[] = {"address", "scope", "reason",
                                         "source",  "added", "expires"};
constexpr size_t kNumColumns = sizeof kColumns / sizeof kColumns[0];

absl::Status Unexpected(std::string_view what) {
  return absl::DataLossError(absl::StrCat("unexpected answer from volleyd: ", base::Sv(what)));
}

absl::StatusOr<SuppressionRow> ReadRow(dom::element e) {
  SuppressionRow row;
  std::string* fields[] = {&row.address, &row.scope, &row.reason,
                           &row.source,  &row.added, &row.expires};
  for (size_t i = 0; i < kNumColumns; ++i) {
    std::string_view s;
    auto value = e[kColumns[i]];
    if (kColumns[i] == "expires" && value.is_null()) continue;
    if (value.get_string().get(s) != simdjson::SUCCESS) {
      return Unexpected(absl::StrCat("an entry without \"", base::Sv(kColumns[i]), "\""));
    }
    *fields[i] = std::string(s);
  }
  return row;
}

}  // namespace

std::string CsvField(std::string_view value) {
  const bool quote = value.find_first_of(",\"\r\n") != std::string_view::npos ||
                     (!value.empty() && (value.front() == ' ' || value.back() == ' '));
  if (!quote) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

absl::StatusOr<std::vector<std::string>> ParseCsvLine(std::string_view line) {
  std::vector<std::string> fields;
  size_t i = 0;
  for (;;) {
    std::string field;
    if (i < line.size() && line[i] == '"') {
      ++i;
      for (;;) {
        if (i >= line.size()) return absl::InvalidArgumentError("unterminated quote");
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += line[i++];
      }
      if (i < line.size() && line[i] != ',') {
        return absl::InvalidArgumentError("text after a closing quote");
      }
    } else {
      const size_t comma = line.find(',', i);
      const size_t end = comma == std::string_view::npos ? line.size() : comma;
      field = std::string(line.substr(i, end - i));
      if (field.find('"') != std::string::npos) {
        return absl::InvalidArgumentError("a quote inside an unquoted field");
      }
      i = end;
    }
    fields.push_back(std::move(field));
    if (i >= line.size()) break;
    ++i;  // the comma
    if (i == line.size()) {
      fields.emplace_back();  // a trailing comma: one more, empty, field
      break;
    }
  }
  return fields;
}

std::string SuppressionCsvHeader() {
  std::string out;
  for (size_t i = 0; i < kNumColumns; ++i) absl::StrAppend(&out, i > 0 ? "," : "", base::Sv(kColumns[i]));
  out += "\r\n";
  return out;
}

std::string SuppressionCsvRow(const SuppressionRow& r) {
  return absl::StrCat(CsvField(r.address), ",", CsvField(r.scope), ",", CsvField(r.reason), ",",
                      CsvField(r.source), ",", CsvField(r.added), ",", CsvField(r.expires),
                      "\r\n");
}

absl::StatusOr<SuppressionPage> ParseSuppressionPage(std::string_view body) {
  dom::parser parser;
  dom::element doc;
  if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS) {
    return Unexpected("not JSON");
  }
  dom::array entries;
  if (doc["entries"].get_array().get(entries) != simdjson::SUCCESS) {
    return Unexpected("no \"entries\"");
  }
  SuppressionPage page;
  for (dom::element e : entries) {
    absl::StatusOr<SuppressionRow> row = ReadRow(e);
    if (!row.ok()) return row.status();
    page.rows.push_back(*std::move(row));
  }
  auto next = doc["next"];
  if (!next.is_null()) {
    std::string_view after, after_scope;
    if (next["after"].get_string().get(after) != simdjson::SUCCESS ||
        next["after_scope"].get_string().get(after_scope) != simdjson::SUCCESS) {
      return Unexpected("a \"next\" without \"after\" and \"after_scope\"");
    }
    page.more = true;
    page.after = std::string(after);
    page.after_scope = std::string(after_scope);
  }
  if (doc["approximate_count"].get_uint64().get(page.approximate_count) != simdjson::SUCCESS) {
    page.approximate_count = 0;
  }
  return page;
}

absl::StatusOr<std::optional<SuppressionRow>> ParseCheckAnswer(std::string_view body) {
  dom::parser parser;
  dom::element doc;
  if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS) {
    return Unexpected("not JSON");
  }
  bool suppressed = false;
  if (doc["suppressed"].get_bool().get(suppressed) != simdjson::SUCCESS) {
    return Unexpected("no \"suppressed\"");
  }
  if (!suppressed) return std::optional<SuppressionRow>();
  dom::element entry;
  if (doc["entry"].get(entry) != simdjson::SUCCESS) return Unexpected("no \"entry\"");
  absl::StatusOr<SuppressionRow> row = ReadRow(entry);
  if (!row.ok()) return row.status();
  return std::optional<SuppressionRow>(*std::move(row));
}

std::string FormatSuppression(const SuppressionRow& r) {
  return absl::StrCat("address: ", Printable(r.address), "\nscope: ",
                      r.scope.empty() ? "(global)" : Printable(r.scope), "\nreason: ",
                      Printable(r.reason), "\nsource: ", Printable(r.source), "\nadded: ",
                      Printable(r.added), "\nexpires: ",
                      r.expires.empty() ? "never" : Printable(r.expires), "\n");
}

std::string FormatSuppressionTable(const std::vector<SuppressionRow>& rows, bool header) {
  size_t address_width = 7, scope_width = 5;
  for (const SuppressionRow& r : rows) {
    address_width = std::max(address_width, std::min<size_t>(r.address.size(), 60));
    scope_width = std::max(scope_width, std::min<size_t>(r.scope.size(), 40));
  }
  std::string out;
  const auto line = [&](std::string_view a, std::string_view s, std::string_view reason,
                        std::string_view added, std::string_view expires,
                        std::string_view source) {
    absl::StrAppend(&out, absl::StrFormat("%-*s  %-*s  %-11s  %-20s  %-20s  %s\n",
                                          static_cast<int>(address_width), Printable(a),
                                          static_cast<int>(scope_width), Printable(s),
                                          Printable(reason), Printable(added),
                                          Printable(expires), Printable(source)));
  };
  if (header) line("ADDRESS", "SCOPE", "REASON", "ADDED", "EXPIRES", "SOURCE");
  for (const SuppressionRow& r : rows) {
    line(r.address, r.scope.empty() ? "-" : r.scope, r.reason, r.added,
         r.expires.empty() ? "never" : r.expires, r.source);
  }
  return out;
}

std::string QueryEscape(std::string_view value) {
  std::string out;
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      absl::StrAppend(&out, absl::StrFormat("%%%02X", u));
    }
  }
  return out;
}

std::string SuppressionEntryJson(const SuppressionRow& r) {
  std::string out = "{\"address\":";
  base::AppendJsonString(&out, r.address);
  const std::pair<std::string_view, const std::string*> optional[] = {
      {"scope", &r.scope}, {"reason", &r.reason}, {"source", &r.source},
      {"added", &r.added}, {"expires", &r.expires}};
  for (const auto& [name, value] : optional) {
    if (value->empty()) continue;
    absl::StrAppend(&out, ",\"", base::Sv(name), "\":");
    base::AppendJsonString(&out, *value);
  }
  out += "}";
  return out;
}

absl::StatusOr<ImportAnswer> ParseImportAnswer(std::string_view body) {
  dom::parser parser;
  dom::element doc;
  if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS) {
    return Unexpected("not JSON");
  }
  ImportAnswer answer;
  dom::array errors;
  if (doc["added"].get_uint64().get(answer.added) != simdjson::SUCCESS ||
      doc["errors"].get_array().get(errors) != simdjson::SUCCESS) {
    return Unexpected("no \"added\" or \"errors\"");
  }
  for (dom::element e : errors) {
    uint64_t index = 0;
    std::string_view text;
    if (e["index"].get_uint64().get(index) != simdjson::SUCCESS ||
        e["error"].get_string().get(text) != simdjson::SUCCESS) {
      return Unexpected("an error without \"index\" or \"error\"");
    }
    answer.errors.emplace_back(static_cast<size_t>(index), std::string(text));
  }
  return answer;
}

absl::Status ImportReader::SkipTooLong() {
  ++number_;
  return absl::InvalidArgumentError(
      absl::StrCat(file_, ":", number_, ": longer than ", kMaxImportLine, " octets"));
}

absl::StatusOr<ImportReader::Line> ImportReader::Next(std::string_view text) {
  Line line;
  line.number = ++number_;
  const auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_, ":", line.number, ": ", base::Sv(why)));
  };
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  if (text.size() > kMaxImportLine) {
    return bad(absl::StrCat("longer than ", kMaxImportLine, " octets"));
  }
  const std::string_view trimmed = base::StdSv(absl::StripAsciiWhitespace(base::Sv(text)));
  if (trimmed.empty() || (!csv_ && trimmed.front() == '#')) {
    line.skip = true;
    return line;
  }
  if (line.number == 1) {
    // The CSV header decides the format; anything else on line 1 is an address.
    absl::StatusOr<std::vector<std::string>> fields = ParseCsvLine(trimmed);
    if (fields.ok() && fields->size() == kNumColumns) {
      bool header = true;
      for (size_t i = 0; i < kNumColumns; ++i) {
        header = header && absl::AsciiStrToLower(absl::StripAsciiWhitespace((*fields)[i])) ==
                               base::Sv(kColumns[i]);
      }
      if (header) {
        csv_ = true;
        line.skip = true;
        return line;
      }
    }
  }
  SuppressionRow& e = line.entry;
  if (csv_) {
    absl::StatusOr<std::vector<std::string>> fields = ParseCsvLine(text);
    if (!fields.ok()) return bad(base::StdSv(fields.status().message()));
    if (fields->size() != kNumColumns) {
      return bad(absl::StrCat("expected ", kNumColumns, " fields, got ", fields->size()));
    }
    e.address = (*fields)[0];
    e.scope = (*fields)[1];
    e.reason = (*fields)[2];
    e.source = (*fields)[3];
    e.added = (*fields)[4];
    e.expires = (*fields)[5];
  } else {
    e.address = std::string(trimmed);
  }
  if (e.address.find('@') == std::string::npos) return bad("not an address");
  if (e.scope.empty()) e.scope = defaults_.scope;
  if (e.reason.empty()) e.reason = defaults_.reason;
  if (e.expires.empty()) e.expires = defaults_.expires;
  if (e.source.empty()) e.source = absl::StrCat("import ", file_, " line ", line.number);
  return line;
}

}  // namespace volley::ctl
