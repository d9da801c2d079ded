// admin_suppressions.cc - the admin API's /suppressions endpoints (see admin.h)
//
// Everything here reads what a client sent: the query is percent-decoded into
// bounded pairs, the body is parsed by simdjson within kAdminMaxBody, and every
// address, scope and source goes through the list's own checks
// (queue::NormalizeSuppression) before anything is written.
#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/json.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/admin.h"
#include "engine/config.h"
#include "simdjson.h"

namespace volley::engine {
namespace {

namespace dom = simdjson::dom;

constexpr char kRfc3339Utc[] = "%Y-%m-%dT%H:%M:%SZ";

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::StatusOr<std::string> PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    const int hi = i + 2 < s.size() ? HexDigit(s[i + 1]) : -1;
    const int lo = hi >= 0 ? HexDigit(s[i + 2]) : -1;
    if (lo < 0) return absl::InvalidArgumentError("query: malformed %-escape");
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime(kRfc3339Utc, t, absl::UTCTimeZone());
}

// ParseTime - an RFC 3339 time ("2026-12-06T17:00:00Z", any offset), or with
// `durations`, a duration from `now` ("30d").
absl::StatusOr<absl::Time> ParseTime(std::string_view field, std::string_view text,
                                     absl::Time now, bool durations) {
  if (durations) {
    if (absl::StatusOr<absl::Duration> d = ParseDuration(text); d.ok()) return now + *d;
  }
  absl::Time t;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, base::Sv(text), &t, &error)) return t;
  return absl::InvalidArgumentError(absl::StrCat(
      base::Sv(field), ": not an RFC 3339 time such as \"2026-12-31T00:00:00Z\"",
      durations ? " nor a duration such as \"30d\"" : ""));
}

// ReadEntry - one entry object of a POST body; the list checks the strings.
absl::StatusOr<queue::Suppression> ReadEntry(dom::element e, absl::Time now) {
  dom::object object;
  if (e.get_object().get(object) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("entry: must be a JSON object");
  }
  queue::Suppression s;
  s.reason = queue::SuppressionReason::kManual;
  s.source = "admin API";
  s.added = now;
  bool has_address = false;
  for (auto field : object) {
    const std::string_view key = field.key;
    std::string_view text;
    const bool is_null = field.value.is_null();
    const bool is_string = field.value.get_string().get(text) == simdjson::SUCCESS;
    if (key == "expires" && is_null) continue;  // never
    if (!is_string) {
      std::string shown;
      base::AppendJsonString(&shown, key.substr(0, 64));
      return absl::InvalidArgumentError(absl::StrCat(shown, ": must be a string"));
    }
    if (key == "address") {
      s.address = std::string(text);
      has_address = true;
    } else if (key == "scope") {
      s.scope = std::string(text);
    } else if (key == "reason") {
      ASSIGN_OR_RETURN(s.reason, queue::ParseSuppressionReason(text));
    } else if (key == "source") {
      s.source = std::string(text);
    } else if (key == "expires") {
      if (!text.empty()) {
        ASSIGN_OR_RETURN(s.expires, ParseTime("expires", text, now, true));
      }
    } else if (key == "added") {
      if (!text.empty()) {
        ASSIGN_OR_RETURN(s.added, ParseTime("added", text, now, false));
      }
    } else {
      std::string shown;
      base::AppendJsonString(&shown, key.substr(0, 64));
      return absl::InvalidArgumentError(absl::StrCat("unknown field ", shown));
    }
  }
  if (!has_address) return absl::InvalidArgumentError("address: missing");
  // The list's checks now, so that a batch can name each bad entry and still
  // add the rest.
  RETURN_IF_ERROR(queue::NormalizeSuppression(&s));
  return s;
}

absl::StatusOr<size_t> ParseLimit(std::optional<std::string_view> text) {
  if (!text) return kAdminDefaultSuppressionPage;
  size_t n = 0;
  if (!absl::SimpleAtoi(base::Sv(*text), &n) || n < 1 || n > kAdminMaxSuppressionPage) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: must be 1..", kAdminMaxSuppressionPage));
  }
  return n;
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseAdminQuery(
    std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;  // "a=1&&b=2"
    if (out.size() == kAdminMaxQueryParams) {
      return absl::InvalidArgumentError(
          absl::StrCat("query: more than ", kAdminMaxQueryParams, " parameters"));
    }
    const size_t eq = pair.find('=');
    ASSIGN_OR_RETURN(std::string name, PercentDecode(pair.substr(0, eq)));
    std::string value;
    if (eq != std::string_view::npos) {
      ASSIGN_OR_RETURN(value, PercentDecode(pair.substr(eq + 1)));
    }
    if (name.empty()) return absl::InvalidArgumentError("query: a parameter without a name");
    for (const auto& [seen, unused] : out) {
      if (seen == name) {
        std::string shown;
        base::AppendJsonString(&shown, name.substr(0, 64));
        return absl::InvalidArgumentError(absl::StrCat("query: ", shown, " given twice"));
      }
    }
    out.emplace_back(std::move(name), std::move(value));
  }
  return out;
}

std::string AdminSuppressionJson(const queue::Suppression& e) {
  std::string out = "{\"address\":";
  base::AppendJsonString(&out, e.address);
  out += ",\"scope\":";
  base::AppendJsonString(&out, e.scope);
  out += ",\"reason\":";
  base::AppendJsonString(&out, queue::SuppressionReasonName(e.reason));
  out += ",\"source\":";
  base::AppendJsonString(&out, e.source);
  out += ",\"added\":";
  base::AppendJsonString(&out, Rfc3339(e.added));
  out += ",\"expires\":";
  if (e.expires == absl::InfiniteFuture()) {
    out += "null";
  } else {
    base::AppendJsonString(&out, Rfc3339(e.expires));
  }
  out += "}";
  return out;
}

absl::StatusOr<AdminSuppressionBatch> ParseAdminSuppressions(std::string_view body,
                                                             absl::Time now) {
  dom::parser parser;
  dom::element doc;
  if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("body: not JSON");
  }
  if (!doc.is_object()) return absl::InvalidArgumentError("body: must be a JSON object");
  AdminSuppressionBatch out;
  dom::array entries;
  const auto batch = doc["entries"];
  if (batch.error() == simdjson::NO_SUCH_FIELD) {
    absl::StatusOr<queue::Suppression> e = ReadEntry(doc, now);
    if (!e.ok()) return e.status();
    out.entries.push_back(*std::move(e));
    out.entry_index.push_back(0);
    return out;
  }
  if (batch.get_array().get(entries) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("entries: must be an array");
  }
  if (doc.get_object().value().size() != 1) {
    return absl::InvalidArgumentError("body: a batch has \"entries\" and nothing else");
  }
  if (entries.size() > kAdminMaxSuppressionBatch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "entries: more than ", kAdminMaxSuppressionBatch, " in one request; send batches"));
  }
  out.batch = true;
  size_t index = 0;
  for (dom::element e : entries) {
    absl::StatusOr<queue::Suppression> entry = ReadEntry(e, now);
    if (entry.ok()) {
      out.entries.push_back(*std::move(entry));
      out.entry_index.push_back(index);
    } else {
      out.errors.emplace_back(index, std::string(entry.status().message()));
    }
    ++index;
  }
  return out;
}

http::Response AdminServer::HandleSuppressions(const AdminRequest& req, std::string_view body) {
  auto answer = [](int status, std::string text) {
    return http::Response{status, "application/json", std::move(text), {}};
  };
  auto error = [&answer](const absl::Status& st) {
    const int status = AdminHttpStatus(st);
    if (status == 500) base::LogInfo("admin API: %s", base::StdSv(st.message()));
    std::string text = "{\"error\":";
    base::AppendJsonString(&text, base::StdSv(st.message()));
    text += "}\n";
    return answer(status, std::move(text));
  };
  if (suppressions_ == nullptr) return error(absl::InternalError("no suppression list"));
  const absl::Time now = absl::Now();
  using Action = AdminRequest::Action;
  switch (req.action) {
    case Action::kListSuppressions: {
      absl::StatusOr<size_t> limit = ParseLimit(req.Param("limit"));
      if (!limit.ok()) return error(limit.status());
      std::vector<queue::Suppression> page;
      const absl::Status st = suppressions_->List(req.Param("after").value_or(""),
                                                  req.Param("after_scope").value_or(""), *limit,
                                                  &page);
      if (!st.ok()) return error(st);
      std::string text = "{\"entries\":[";
      for (size_t i = 0; i < page.size(); ++i) {
        if (i > 0) text += ",";
        text += AdminSuppressionJson(page[i]);
      }
      text += "],\"next\":";
      if (page.size() == *limit) {
        text += "{\"after\":";
        base::AppendJsonString(&text, page.back().address);
        text += ",\"after_scope\":";
        base::AppendJsonString(&text, page.back().scope);
        text += "}";
      } else {
        text += "null";
      }
      absl::StrAppend(&text, ",\"approximate_count\":", suppressions_->ApproximateCount(), "}\n");
      return answer(200, std::move(text));
    }
    case Action::kCheckSuppression: {
      const std::optional<std::string_view> address = req.Param("address");
      if (!address) return error(absl::InvalidArgumentError("address: missing"));
      absl::StatusOr<std::optional<queue::Suppression>> hit =
          suppressions_->Check(*address, req.Param("from_domain").value_or(""), now);
      if (!hit.ok()) return error(hit.status());
      if (!hit->has_value()) return answer(200, "{\"suppressed\":false}\n");
      return answer(200, absl::StrCat("{\"suppressed\":true,\"entry\":",
                                      AdminSuppressionJson(**hit), "}\n"));
    }
    case Action::kRemoveSuppression: {
      const std::optional<std::string_view> address = req.Param("address");
      if (!address) return error(absl::InvalidArgumentError("address: missing"));
      const std::string_view scope = req.Param("scope").value_or("");
      absl::StatusOr<bool> removed = suppressions_->Remove(*address, scope);
      if (!removed.ok()) return error(removed.status());
      if (!*removed) {
        std::string what;
        base::AppendJsonString(&what, *address);
        std::string in;
        base::AppendJsonString(&in, scope);
        return error(absl::NotFoundError(absl::StrCat("not on the list: ", what, " in scope ", in)));
      }
      return answer(200, "{\"removed\":true}\n");
    }
    case Action::kAddSuppressions: {
      absl::StatusOr<AdminSuppressionBatch> batch = ParseAdminSuppressions(body, now);
      if (!batch.ok()) return error(batch.status());
      if (!batch->entries.empty()) {
        if (absl::Status st = suppressions_->AddBatch(batch->entries); !st.ok()) return error(st);
      }
      std::string text = absl::StrCat("{\"added\":", batch->entries.size(),
                                      ",\"skipped\":", batch->errors.size(), ",\"errors\":[");
      for (size_t i = 0; i < batch->errors.size(); ++i) {
        if (i > 0) text += ",";
        absl::StrAppend(&text, "{\"index\":", batch->errors[i].first, ",\"error\":");
        base::AppendJsonString(&text, batch->errors[i].second);
        text += "}";
      }
      text += "]}\n";
      return answer(200, std::move(text));
    }
    default:
      return error(absl::InternalError("not a suppressions request"));
  }
}

}  // namespace volley::engine
