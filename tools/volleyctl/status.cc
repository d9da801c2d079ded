// status.cc - volleyctl's read side (see status.h)
#include "tools/volleyctl/status.h"

#include <dirent.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/json.h"
#include "base/status.h"
#include "base/strings.h"
#include "simdjson.h"
#include "tools/volleyctl/ctl.h"

namespace volley::ctl {
namespace {

namespace dom = simdjson::dom;

absl::Status Unexpected(std::string_view what) {
  return absl::DataLossError(absl::StrCat("unexpected answer from volleyd: ", base::Sv(what)));
}

std::string Str(dom::element e, std::string_view field, std::string_view absent = "-") {
  std::string_view s;
  if (e[field].get_string().get(s) == simdjson::SUCCESS) return Printable(s);
  return std::string(absent);
}

uint64_t Count(dom::element e, std::string_view field) {
  uint64_t n = 0;
  if (e[field].get_uint64().get(n) != simdjson::SUCCESS) return 0;
  return n;
}

std::optional<double> Number(dom::element e, std::string_view field) {
  double d = 0;
  if (e[field].get_double().get(d) == simdjson::SUCCESS) return d;
  return std::nullopt;
}

std::string PercentEncode(std::string_view s) {
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(u) || c == '.' || c == '-' || c == '_' || c == '@') {
      out += c;
    } else {
      absl::StrAppend(&out, absl::StrFormat("%%%02X", u));
    }
  }
  return out;
}

std::string RateCell(dom::element e) {
  const std::optional<double> rate = Number(e, "rate");
  return rate ? FormatRate(*rate) : "-";
}

std::string EtaCell(dom::element e) {
  int64_t eta = 0;
  if (e["eta_seconds"].get_int64().get(eta) == simdjson::SUCCESS) return FormatSeconds(eta);
  return "-";
}

// DestinationRows - the table of a destinations answer, at most `max` rows.
absl::StatusOr<std::vector<std::vector<std::string>>> DestinationRows(std::string_view body,
                                                                      size_t max,
                                                                      size_t* shown,
                                                                      size_t* total) {
  dom::parser parser;
  dom::element doc;
  dom::array list;
  if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS ||
      doc["destinations"].get_array().get(list) != simdjson::SUCCESS) {
    return Unexpected("no \"destinations\" array");
  }
  std::vector<std::vector<std::string>> rows = {{"DESTINATION", "STATE", "QUEUED", "IN-FLIGHT",
                                                 "DEFERRALS", "CONNS", "RATE", "LEVEL",
                                                 "NEXT-RETRY", "LAST-REPLY"}};
  *shown = 0;
  for (dom::element d : list) {
    if (*shown >= max) break;
    ++*shown;
    const std::optional<double> limit = Number(d, "max_message_rate");
    const std::optional<double> rate = Number(d, "rate");
    std::string rate_cell = rate ? FormatRate(*rate) : "-";
    if (limit && *limit > 0) rate_cell += "/" + FormatRate(*limit);
    std::string last = Str(d, "last_reply");
    const std::string klass = Str(d, "last_class", "");
    if (!klass.empty() && klass != "-") last += " [" + klass + "]";
    if (last.size() > 60) last = last.substr(0, 57) + "...";
    rows.push_back({Str(d, "name"), Str(d, "state"), absl::StrCat(Count(d, "queued")),
                    absl::StrCat(Count(d, "in_flight")), absl::StrCat(Count(d, "deferrals")),
                    absl::StrCat(Count(d, "connections"), "/", Count(d, "max_connections")),
                    rate_cell, absl::StrCat(Count(d, "level")), Str(d, "next_retry"), last});
  }
  uint64_t t = 0;
  *total = doc["total"].get_uint64().get(t) == simdjson::SUCCESS ? t : *shown;
  return rows;
}

const std::vector<bool> kDestinationNumeric = {false, false, true, true, true,
                                               true,  true,  true, false, false};

}  // namespace

std::string ProgressBar(uint64_t delivered, uint64_t bounced, uint64_t deferred,
                        uint64_t pending, size_t width) {
  const uint64_t waiting = pending > deferred ? pending - deferred : 0;
  const uint64_t parts[4] = {delivered, bounced, std::min(deferred, pending), waiting};
  const char marks[4] = {'#', 'x', '~', '.'};
  const uint64_t total = parts[0] + parts[1] + parts[2] + parts[3];
  std::string bar;
  if (total == 0 || width == 0) return "[" + std::string(width, ' ') + "]";
  // Largest remainder: the cells add up to `width`, and a kind with any
  // recipient gets a cell (taken from the largest) so a few bounces show.
  size_t cells[4] = {};
  std::pair<double, int> rest[4];
  size_t used = 0;
  for (int i = 0; i < 4; ++i) {
    // In double: counts times a width would overflow 64 bits only past 10^17
    // recipients, but a share needs no more precision than a cell.
    const double scaled = static_cast<double>(parts[i]) * static_cast<double>(width) /
                          static_cast<double>(total);
    cells[i] = std::min(width, static_cast<size_t>(scaled));
    rest[i] = {scaled - static_cast<double>(cells[i]), -i};
    used += cells[i];
  }
  std::sort(rest, rest + 4, [](auto a, auto b) { return a > b; });
  for (int k = 0; used < width; ++k, ++used) ++cells[-rest[k % 4].second];
  while (used > width) {  // rounding in double: never more cells than the width
    --*std::max_element(cells, cells + 4);
    --used;
  }
  for (int i = 0; i < 4; ++i) {
    if (parts[i] == 0 || cells[i] > 0) continue;
    size_t* largest = std::max_element(cells, cells + 4);
    if (*largest > 1) {
      --*largest;
      cells[i] = 1;
    }
  }
  for (int i = 0; i < 4; ++i) bar.append(cells[i], marks[i]);
  return "[" + bar + "]";
}

std::string DestinationsPath(bool all, size_t limit) {
  return absl::StrCat("/destinations?all=", all ? "1" : "0", "&limit=", limit);
}

std::string QueuePath(std::string_view domain, std::string_view job) {
  std::string path = "/queue";
  char sep = '?';
  if (!domain.empty()) {
    absl::StrAppend(&path, std::string(1, sep), "domain=", PercentEncode(domain));
    sep = '&';
  }
  if (!job.empty()) absl::StrAppend(&path, std::string(1, sep), "job=", PercentEncode(job));
  return path;
}

absl::StatusOr<std::string> FormatDestinationsTable(std::string_view body) {
  size_t shown = 0, total = 0;
  ASSIGN_OR_RETURN(auto rows, DestinationRows(body, SIZE_MAX, &shown, &total));
  std::string out = FormatTable(rows, kDestinationNumeric);
  if (shown < total) absl::StrAppend(&out, "(", shown, " of ", total, " destinations)\n");
  return out;
}

absl::StatusOr<std::string> FormatQueueSummary(std::string_view body) {
  dom::parser parser;
  dom::element doc;
  dom::object ages;
  if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS ||
      doc["ages"].get_object().get(ages) != simdjson::SUCCESS) {
    return Unexpected("no \"ages\" object");
  }
  uint64_t in_flight = 0;
  const bool has_in_flight = doc["in_flight"].get_uint64().get(in_flight) == simdjson::SUCCESS;
  std::string out = absl::StrCat(
      "total: ", Count(doc, "total"), "\nready: ", Count(doc, "ready"),
      "\ndeferred: ", Count(doc, "deferred"), "\nscheduled: ", Count(doc, "scheduled"),
      "\nin_flight: ", has_in_flight ? absl::StrCat(in_flight) : std::string("-"), "\n");
  int64_t oldest = 0;
  absl::StrAppend(&out, "oldest: ",
                  doc["oldest_age_seconds"].get_int64().get(oldest) == simdjson::SUCCESS
                      ? absl::StrCat(FormatSeconds(oldest), " (", Str(doc, "oldest_queued_at"), ")")
                      : std::string("-"),
                  "\nnext_due: ", Str(doc, "next_due"), "\n");
  std::vector<std::vector<std::string>> rows(2);
  for (auto field : ages) {
    rows[0].push_back(Printable(field.key));
    uint64_t n = 0;
    if (field.value.get_uint64().get(n) != simdjson::SUCCESS) n = 0;
    rows[1].push_back(absl::StrCat(n));
  }
  out += "age:\n" + FormatTable(rows, std::vector<bool>(rows[0].size(), true));
  bool truncated = false;
  if (doc["truncated"].get_bool().get(truncated) == simdjson::SUCCESS && truncated) {
    absl::StrAppend(&out, "(counted the first ", Count(doc, "scanned"),
                    " recipients only: the scan is bounded)\n");
  }
  return out;
}

StatusAnswers FetchStatus(std::string_view admin) {
  StatusAnswers a;
  auto get = [&](std::string_view what, const std::string& path, std::optional<std::string>* to) {
    absl::StatusOr<HttpResponse> r = Call(admin, "GET", path, kCallTimeout);
    if (!r.ok()) {
      a.errors.push_back(absl::StrCat(base::Sv(what), ": ", r.status().message()));
    } else if (r->status != 200) {
      a.errors.push_back(absl::StrCat(base::Sv(what), ": volleyd: ", ErrorText(r->body)));
    } else {
      *to = std::move(r->body);
    }
  };
  get("jobs", "/jobs", &a.jobs);
  get("destinations", DestinationsPath(true, kStatusDestinations), &a.destinations);
  get("queue", "/queue", &a.queue);
  return a;
}

std::string FormatStatus(const StatusAnswers& a, size_t max_destinations) {
  std::string out;
  if (a.jobs) {
    dom::parser parser;
    dom::element doc;
    dom::array jobs;
    if (parser.parse(a.jobs->data(), a.jobs->size()).get(doc) != simdjson::SUCCESS ||
        doc["jobs"].get_array().get(jobs) != simdjson::SUCCESS) {
      out += "jobs: unexpected answer from volleyd\n";
    } else {
      std::vector<std::vector<std::string>> rows = {
          {"JOB", "STATE", "PROGRESS", "DELIVERED", "BOUNCED", "DEFERRED", "PENDING", "RATE",
           "ETA"}};
      for (dom::element j : jobs) {
        const uint64_t failed = Count(j, "bounced") + Count(j, "expired") +
                                Count(j, "cancelled") + Count(j, "suppressed");
        std::string state = Str(j, "state");
        bool paused = false;
        if (j["paused"].get_bool().get(paused) == simdjson::SUCCESS && paused) state += ",paused";
        rows.push_back({Str(j, "id"), state,
                        ProgressBar(Count(j, "delivered"), failed, Count(j, "deferred"),
                                    Count(j, "pending"), kStatusBarWidth),
                        absl::StrCat(Count(j, "delivered")), absl::StrCat(failed),
                        absl::StrCat(Count(j, "deferred")), absl::StrCat(Count(j, "pending")),
                        RateCell(j), EtaCell(j)});
      }
      if (rows.size() == 1) {
        out += "no jobs\n";
      } else {
        out += FormatTable(rows, {false, false, false, true, true, true, true, true, true});
      }
    }
  }
  if (a.destinations) {
    size_t shown = 0, total = 0;
    absl::StatusOr<std::vector<std::vector<std::string>>> rows =
        DestinationRows(*a.destinations, max_destinations, &shown, &total);
    out += "\n";
    if (!rows.ok()) {
      absl::StrAppend(&out, "destinations: ", rows.status().message(), "\n");
    } else if (shown == 0) {
      out += "no destinations\n";
    } else {
      out += FormatTable(*rows, kDestinationNumeric);
      if (shown < total) absl::StrAppend(&out, "(busiest ", shown, " of ", total, ")\n");
    }
  }
  if (a.queue) {
    dom::parser parser;
    dom::element q;
    out += "\n";
    if (parser.parse(a.queue->data(), a.queue->size()).get(q) != simdjson::SUCCESS) {
      out += "queue: unexpected answer from volleyd\n";
    } else {
      uint64_t in_flight = 0;
      const bool has = q["in_flight"].get_uint64().get(in_flight) == simdjson::SUCCESS;
      int64_t oldest = 0;
      absl::StrAppend(&out, "queue: ", Count(q, "total"), " queued (", Count(q, "ready"),
                      " ready, ", Count(q, "deferred"), " deferred, ", Count(q, "scheduled"),
                      " scheduled), ", has ? absl::StrCat(in_flight) : std::string("-"),
                      " in flight; oldest ",
                      q["oldest_age_seconds"].get_int64().get(oldest) == simdjson::SUCCESS
                          ? FormatSeconds(oldest)
                          : std::string("-"),
                      ", next due ", Str(q, "next_due"), "\n");
    }
  }
  for (const std::string& e : a.errors) absl::StrAppend(&out, "error: ", Printable(e), "\n");
  return out;
}

std::string StatusJson(const StatusAnswers& a) {
  auto member = [](const std::optional<std::string>& body, std::string_view field) -> std::string {
    if (!body) return "null";
    dom::parser parser;
    dom::element doc;
    if (parser.parse(body->data(), body->size()).get(doc) != simdjson::SUCCESS) return "null";
    if (field.empty()) return simdjson::minify(doc);
    dom::element inner;
    if (doc[field].get(inner) != simdjson::SUCCESS) return "null";
    return simdjson::minify(inner);
  };
  std::string out = absl::StrCat("{\"jobs\":", member(a.jobs, "jobs"),
                                 ",\"destinations\":", member(a.destinations, "destinations"),
                                 ",\"queue\":", member(a.queue, ""), ",\"errors\":[");
  for (size_t i = 0; i < a.errors.size(); ++i) {
    if (i > 0) out += ",";
    base::AppendJsonString(&out, a.errors[i]);
  }
  out += "]}\n";
  return out;
}

absl::StatusOr<std::vector<std::string>> DeliveryLogFiles(const std::string& dir) {
  // deliveries-YYYYMMDDTHHMMSSZ[-N].jsonl: sorted by the time, then N.
  std::vector<std::tuple<std::string, uint64_t, std::string>> rotated;
  bool current = false;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    return absl::NotFoundError(absl::StrCat("delivery log folder ", dir, ": ",
                                            std::strerror(errno), " ([paths] log; --config)"));
  }
  while (const dirent* e = readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "deliveries.jsonl") {
      current = true;
      continue;
    }
    constexpr std::string_view kPrefix = "deliveries-", kSuffix = ".jsonl";
    if (name.size() < kPrefix.size() + 16 + kSuffix.size() || !name.starts_with(kPrefix) ||
        !name.ends_with(kSuffix)) {
      continue;
    }
    name = name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
    std::string_view stamp = name.substr(0, 16);
    if (stamp[8] != 'T' || stamp[15] != 'Z') continue;
    uint64_t counter = 0;
    std::string_view rest = name.substr(16);
    if (!rest.empty() && (rest.front() != '-' || !absl::SimpleAtoi(base::Sv(rest.substr(1)), &counter))) {
      continue;
    }
    rotated.emplace_back(std::string(stamp), counter, dir + "/" + std::string(e->d_name));
  }
  closedir(d);
  std::sort(rotated.begin(), rotated.end());
  std::vector<std::string> files;
  for (auto& r : rotated) files.push_back(std::move(std::get<2>(r)));
  if (current) files.push_back(dir + "/deliveries.jsonl");
  if (files.empty()) {
    return absl::NotFoundError(absl::StrCat("no delivery log (deliveries.jsonl) in ", dir));
  }
  return files;
}

absl::Status TraceRecipient(const std::vector<std::string>& files, std::string_view rcpt,
                            std::string_view job,
                            const std::function<void(std::string_view record)>& on_record) {
  dom::parser parser;
  std::string line;
  std::vector<char> buf(64 << 10);
  for (const std::string& path : files) {
    std::unique_ptr<FILE, decltype(&std::fclose)> f(std::fopen(path.c_str(), "re"), &std::fclose);
    if (f == nullptr) {
      // Rotated away (deleted past `keep`) between listing and reading: skip it.
      if (errno == ENOENT) continue;
      return absl::UnavailableError(absl::StrCat(path, ": ", std::strerror(errno)));
    }
    bool overlong = false;
    auto consider = [&] {
      if (overlong || line.empty()) return;
      // Cheap test first: most lines are other recipients'.
      if (std::search(line.begin(), line.end(), rcpt.begin(), rcpt.end(), [](char a, char b) {
            return absl::ascii_tolower(static_cast<unsigned char>(a)) ==
                   absl::ascii_tolower(static_cast<unsigned char>(b));
          }) == line.end()) {
        return;
      }
      dom::element doc;
      std::string_view r, j;
      if (parser.parse(line).get(doc) != simdjson::SUCCESS) return;
      if (doc["rcpt"].get_string().get(r) != simdjson::SUCCESS ||
          !absl::EqualsIgnoreCase(base::Sv(r), base::Sv(rcpt))) {
        return;
      }
      if (!job.empty() &&
          (doc["job"].get_string().get(j) != simdjson::SUCCESS || j != job)) {
        return;
      }
      on_record(line);
    };
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) {
      for (size_t i = 0; i < n;) {
        const char* nl = static_cast<const char*>(std::memchr(buf.data() + i, '\n', n - i));
        const size_t end = nl != nullptr ? static_cast<size_t>(nl - buf.data()) : n;
        if (!overlong) {
          if (line.size() + (end - i) > kMaxTraceLine) {
            overlong = true;
            line.clear();
          } else {
            line.append(buf.data() + i, end - i);
          }
        }
        if (nl == nullptr) break;
        consider();
        line.clear();
        overlong = false;
        i = end + 1;
      }
    }
    if (std::ferror(f.get())) {
      return absl::UnavailableError(absl::StrCat(path, ": read error"));
    }
    consider();  // a last line without its newline (a write under way)
    line.clear();
  }
  return absl::OkStatus();
}

std::string FormatTraceRecord(std::string_view record) {
  dom::parser parser;
  dom::element r;
  if (parser.parse(record.data(), record.size()).get(r) != simdjson::SUCCESS) {
    return Printable(record) + "\n";
  }
  std::string out = absl::StrCat(Str(r, "ts"), "  ", Str(r, "job"), " line ", Count(r, "line"),
                                 "  ", Str(r, "status"), "  attempt ", Count(r, "attempt"));
  const std::string host = Str(r, "host", "");
  if (!host.empty()) absl::StrAppend(&out, "  ", host, ":", Count(r, "port"));
  const std::string mx = Str(r, "mx", "");
  if (!mx.empty()) absl::StrAppend(&out, " (mx ", mx, ")");
  uint64_t code = 0;
  if (r["code"].get_uint64().get(code) == simdjson::SUCCESS && code != 0) {
    absl::StrAppend(&out, "  ", code);
  }
  const std::string enhanced = Str(r, "enhanced", "");
  if (!enhanced.empty()) absl::StrAppend(&out, " ", enhanced);
  const std::string response = Str(r, "response", "");
  if (!response.empty()) absl::StrAppend(&out, " ", response);
  const std::string klass = Str(r, "class", "");
  if (!klass.empty()) absl::StrAppend(&out, "  [", klass, "]");
  const std::string tls = Str(r, "tls_version", "");
  if (!tls.empty()) absl::StrAppend(&out, "  tls ", tls, " ", Str(r, "tls_cipher", ""));
  uint64_t backoff = 0;
  if (r["backoff"].get_uint64().get(backoff) == simdjson::SUCCESS) {
    absl::StrAppend(&out, "  backoff ", backoff);
  }
  out += "\n";
  return out;
}

}  // namespace volley::ctl
