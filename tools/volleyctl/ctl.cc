// ctl.cc - volleyctl's logic (see ctl.h)
#include "tools/volleyctl/ctl.h"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/file.h"
#include "base/host_port.h"
#include "base/json.h"
#include "base/status.h"
#include "base/strings.h"
#include "metrics/delivery_status.h"
#include "simdjson.h"
#include "toml++/toml.h"

namespace volley::ctl {
namespace {

namespace dom = simdjson::dom;

// The counters of a job object, in the order volleyctl shows them. Those of
// recipients by outcome are named after the delivery statuses (engine/admin.h).
using metrics::DeliveryStatus;
using metrics::DeliveryStatusName;
constexpr std::string_view kCounters[] = {"total",
                                          DeliveryStatusName(DeliveryStatus::kDelivered),
                                          DeliveryStatusName(DeliveryStatus::kDeferred),
                                          DeliveryStatusName(DeliveryStatus::kBounced),
                                          DeliveryStatusName(DeliveryStatus::kExpired),
                                          DeliveryStatusName(DeliveryStatus::kCancelled),
                                          "pending",
                                          "deferrals"};
constexpr size_t kNumCounters = sizeof kCounters / sizeof kCounters[0];
// The jobs table shows the counters before "deferrals", which counts attempts, not
// recipients (volleyctl job shows it).
constexpr size_t kTableCounters = kNumCounters - 1;

struct Job {
  std::string id;
  std::string state;
  bool paused = false;
  std::optional<int64_t> priority;
  std::optional<uint64_t> job_no;  // volleyd before issue 15 did not send it
  std::string queued_at;
  uint64_t counters[kNumCounters] = {};
  uint64_t Counter(std::string_view name) const {
    for (size_t i = 0; i < kNumCounters; ++i) {
      if (name == kCounters[i]) return counters[i];
    }
    return 0;
  }
};

absl::Status Unexpected(std::string_view what) {
  return absl::DataLossError(absl::StrCat("unexpected answer from volleyd: ", base::Sv(what)));
}

absl::StatusOr<Job> ReadJob(dom::element e) {
  Job job;
  std::string_view s;
  if (e["id"].get_string().get(s) != simdjson::SUCCESS) return Unexpected("a job without \"id\"");
  job.id = std::string(s);
  if (e["state"].get_string().get(s) != simdjson::SUCCESS) {
    return Unexpected("a job without \"state\"");
  }
  job.state = std::string(s);
  if (e["paused"].get_bool().get(job.paused) != simdjson::SUCCESS) {
    return Unexpected("a job without \"paused\"");
  }
  int64_t priority = 0;
  if (e["priority"].get_int64().get(priority) == simdjson::SUCCESS) job.priority = priority;
  uint64_t job_no = 0;
  if (e["job_no"].get_uint64().get(job_no) == simdjson::SUCCESS) job.job_no = job_no;
  if (e["queued_at"].get_string().get(s) == simdjson::SUCCESS) job.queued_at = std::string(s);
  for (size_t i = 0; i < kNumCounters; ++i) {
    if (e[kCounters[i]].get_uint64().get(job.counters[i]) != simdjson::SUCCESS) {
      return Unexpected(absl::StrCat("a job without \"", base::Sv(kCounters[i]), "\""));
    }
  }
  return job;
}

// PercentDone - the share of the job that has left the queue, as "12.5".
std::string PercentDone(const Job& job) {
  const uint64_t total = job.Counter("total");
  if (total == 0) return "-";
  const uint64_t done = total - std::min(total, job.Counter("pending"));
  // Never "100.0" while something is pending: floor to one decimal.
  const uint64_t tenths = done * 1000 / total;
  return absl::StrFormat("%d.%d", tenths / 10, tenths % 10);
}

// ParseToml - a config file, or InvalidArgument "FILE:LINE: why".
absl::StatusOr<toml::table> ParseToml(const std::string& path) {
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.source().begin.line, ": ", base::Sv(e.description())));
  }
}

// GetString - *out = the string at `node` (left alone when there is none).
absl::Status GetString(const std::string& path, const toml::node* node, std::string_view key,
                       std::string* out) {
  if (node == nullptr) return absl::OkStatus();
  const auto* s = node->as_string();
  if (s == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", node->source().begin.line, ": ",
                                                   base::Sv(key), ": must be a string"));
  }
  *out = std::string(s->get());
  return absl::OkStatus();
}

}  // namespace

std::string Printable(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return out;
}

absl::StatusOr<HttpResponse> Call(std::string_view admin, std::string_view method,
                                  std::string_view path, absl::Duration timeout,
                                  std::string_view body) {
  auto where = base::ParseHostPort(admin);
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  if (!where.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("admin address \"", base::Sv(admin), "\": ", where.status().message()));
  }
  if (!base::IpLiteralAddress(*where, &addr, &addr_len)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "admin address \"", base::Sv(admin),
        "\": host must be an IP address literal (names need DNS routing)"));
  }
  static std::once_flag curl_init;
  std::call_once(curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (curl == nullptr) return absl::InternalError("cannot start libcurl");
  struct Answer {
    std::string body;
    bool too_long = false;
  } answer;
  // Headers curl would add that the admin API has no use for; Accept it reads.
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr,
                                                                      curl_slist_free_all);
  for (const char* h : {"Accept: application/json",
                        body.empty() ? "Content-Type:" : "Content-Type: application/json",
                        "Expect:"}) {
    headers.reset(curl_slist_append(headers.release(), h));
  }
  char error[CURL_ERROR_SIZE] = {};
  const std::string url = absl::StrCat("http://", base::FormatHostPort(*where), base::Sv(path));
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  // Plain HTTP to the address given: no other scheme, no redirect, and no
  // proxy from the environment (http_proxy would send job control elsewhere).
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(timeout)));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "volleyctl");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(kMaxResponse));
  if (method == "POST") {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.empty() ? "" : body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  } else if (method != "GET") {
    const std::string m(method);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, m.c_str());
  }
  // An answer without Content-Length is bounded here, as it comes.
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &answer);
  curl_easy_setopt(
      c, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t count, void* to) -> size_t {
        auto* a = static_cast<Answer*>(to);
        const size_t n = size * count;  // size is 1, as curl documents
        if (a->body.size() + n > kMaxResponse) {
          a->too_long = true;
          return 0;  // curl stops with CURLE_WRITE_ERROR
        }
        a->body.append(data, n);
        return n;
      });
  const CURLcode rc = curl_easy_perform(c);
  const std::string why = error[0] != '\0' ? error : curl_easy_strerror(rc);
  if (answer.too_long || rc == CURLE_FILESIZE_EXCEEDED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("volleyd's answer is longer than ", kMaxResponse >> 20, " MiB"));
  }
  switch (rc) {
    case CURLE_OK:
      break;
    case CURLE_COULDNT_CONNECT: {
      long err = 0;
      curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &err);
      return absl::UnavailableError(absl::StrCat(
          "cannot connect to volleyd's admin API at ", base::Sv(admin), ": ",
          err != 0 ? std::strerror(static_cast<int>(err)) : why, " (is volleyd running?)"));
    }
    case CURLE_OPERATION_TIMEDOUT:
      return absl::DeadlineExceededError(absl::StrCat("volleyd's admin API at ", base::Sv(admin),
                                                      " did not answer within ",
                                                      absl::FormatDuration(timeout)));
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_PARTIAL_FILE:
    case CURLE_BAD_CONTENT_ENCODING:
      return Unexpected(why);
    default:
      return absl::UnavailableError(
          absl::StrCat("volleyd's admin API at ", base::Sv(admin), ": ", why));
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  return HttpResponse{static_cast<int>(status), std::move(answer.body)};
}

std::string JobPath(std::string_view id, std::string_view suffix) {
  std::string out = "/jobs/";
  for (char c : id) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '%' || c == '/' || c == '?' || c == '#') {
      absl::StrAppend(&out, absl::StrFormat("%%%02X", u));
    } else {
      out += c;
    }
  }
  out += suffix;
  return out;
}

std::string ErrorText(std::string_view body) {
  dom::parser parser;
  dom::element doc;
  std::string_view error;
  if (parser.parse(body.data(), body.size()).get(doc) == simdjson::SUCCESS &&
      doc["error"].get_string().get(error) == simdjson::SUCCESS) {
    return Printable(error);
  }
  return Printable(base::StdSv(absl::StripAsciiWhitespace(base::Sv(body)).substr(0, 500)));
}

absl::StatusOr<std::string> FormatJobsTable(std::string_view body) {
  dom::parser parser;
  dom::element doc;
  dom::array jobs;
  if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS ||
      doc["jobs"].get_array().get(jobs) != simdjson::SUCCESS) {
    return Unexpected("no \"jobs\" array");
  }
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"ID", "STATE", "PAUSED"};
  for (size_t i = 0; i < kTableCounters; ++i) {
    header.push_back(absl::AsciiStrToUpper(base::Sv(kCounters[i])));
  }
  header.push_back("DONE%");
  rows.push_back(std::move(header));
  for (dom::element e : jobs) {
    ASSIGN_OR_RETURN(Job job, ReadJob(e));
    std::vector<std::string> row = {Printable(job.id), Printable(job.state),
                                    job.paused ? "yes" : "no"};
    for (size_t i = 0; i < kTableCounters; ++i) row.push_back(absl::StrCat(job.counters[i]));
    row.push_back(PercentDone(job));
    rows.push_back(std::move(row));
  }
  // Text columns (id, state, paused) to the left, numbers to the right.
  std::vector<bool> numeric(rows[0].size(), true);
  std::fill_n(numeric.begin(), 3, false);
  return FormatTable(rows, numeric);
}

std::string FormatTable(const std::vector<std::vector<std::string>>& rows,
                        const std::vector<bool>& numeric) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line += "  ";
      const std::string pad(width[i] - row[i].size(), ' ');
      line += i < numeric.size() && numeric[i] ? pad + row[i] : row[i] + pad;
    }
    out += std::string(absl::StripTrailingAsciiWhitespace(line)) + "\n";
  }
  return out;
}

absl::StatusOr<std::string> FormatJob(std::string_view body) {
  dom::parser parser;
  dom::element doc;
  if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS) {
    return Unexpected("not JSON");
  }
  std::string_view state;
  if (doc["state"].get_string().get(state) == simdjson::SUCCESS && state == "refused") {
    // Refused whole at intake: no counters, only why (engine/admin.h).
    std::string_view id, file, error;
    if (doc["id"].get_string().get(id) != simdjson::SUCCESS) id = "-";
    if (doc["file"].get_string().get(file) != simdjson::SUCCESS) file = "-";
    if (doc["error"].get_string().get(error) != simdjson::SUCCESS) error = "-";
    return absl::StrCat("id: ", Printable(id), "\nstate: refused\nfile: ", Printable(file),
                        "\nerror: ", Printable(error), "\n");
  }
  ASSIGN_OR_RETURN(Job job, ReadJob(doc));
  std::string out = absl::StrCat("id: ", Printable(job.id), "\nstate: ", Printable(job.state),
                                 "\npaused: ", job.paused ? "yes" : "no", "\n");
  if (job.job_no) absl::StrAppend(&out, "job_no: ", *job.job_no, "\n");
  if (job.priority) absl::StrAppend(&out, "priority: ", *job.priority, "\n");
  if (!job.queued_at.empty()) absl::StrAppend(&out, "queued_at: ", Printable(job.queued_at), "\n");
  for (size_t i = 0; i < kNumCounters; ++i) {
    absl::StrAppend(&out, base::Sv(kCounters[i]), ": ", job.counters[i], "\n");
  }
  // What the feedback loop counts (docs/feedback.md), from a volleyd that sends it.
  uint64_t complained = 0;
  bool has_feedback = false;
  for (std::string_view name : {"suppressed", "bounced_async", "complained", "unsubscribed"}) {
    uint64_t n = 0;
    if (doc[name].get_uint64().get(n) != simdjson::SUCCESS) continue;
    has_feedback = true;
    if (name == "complained") complained = n;
    absl::StrAppend(&out, base::Sv(name), ": ", n, "\n");
  }
  const uint64_t delivered = job.Counter("delivered");
  if (has_feedback && delivered > 0) {
    absl::StrAppend(&out, "complaint_rate: ",
                    absl::StrFormat("%.3f", 100.0 * static_cast<double>(complained) /
                                                static_cast<double>(delivered)),
                    "%\n");
  }
  absl::StrAppend(&out, "done: ", PercentDone(job), "%\n");
  // The read side's fields (issue 20), from a volleyd that sends them.
  if (doc["rate"].error() != simdjson::NO_SUCH_FIELD) {
    double rate = 0;
    const bool known = doc["rate"].get_double().get(rate) == simdjson::SUCCESS;
    absl::StrAppend(&out, "rate: ", known ? FormatRate(rate) : std::string("-"), "\n");
    int64_t eta = 0;
    std::string_view eta_at;
    if (doc["eta_seconds"].get_int64().get(eta) == simdjson::SUCCESS) {
      absl::StrAppend(&out, "eta: ", FormatSeconds(eta));
      if (doc["eta"].get_string().get(eta_at) == simdjson::SUCCESS) {
        absl::StrAppend(&out, " (", Printable(eta_at), ")");
      }
      out += "\n";
    } else {
      out += "eta: -\n";
    }
    uint64_t rejected = 0;
    absl::StrAppend(&out, "rejected: ",
                    doc["rejected"].get_uint64().get(rejected) == simdjson::SUCCESS
                        ? absl::StrCat(rejected)
                        : std::string("-"),
                    "\n");
    for (std::string_view name : {"send_after", "expires"}) {
      std::string_view t;
      absl::StrAppend(&out, base::Sv(name), ": ",
                      doc[name].get_string().get(t) == simdjson::SUCCESS ? Printable(t)
                                                                         : std::string("-"),
                      "\n");
    }
  }
  return out;
}

std::string FormatRate(double per_second) {
  if (!(per_second >= 0)) return "-";
  if (per_second >= 100) return absl::StrFormat("%.0f/s", per_second);
  return absl::StrFormat("%.1f/s", per_second);
}

std::string FormatSeconds(int64_t s) {
  if (s < 0) s = 0;
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) {
    return s % 60 == 0 ? absl::StrCat(s / 60, "m") : absl::StrCat(s / 60, "m", s % 60, "s");
  }
  if (s < 86400) {
    const int64_t m = (s % 3600) / 60;
    return m == 0 ? absl::StrCat(s / 3600, "h") : absl::StrCat(s / 3600, "h", m, "m");
  }
  const int64_t h = (s % 86400) / 3600;
  return h == 0 ? absl::StrCat(s / 86400, "d") : absl::StrCat(s / 86400, "d", h, "h");
}

absl::StatusOr<std::string> AdminFromConfig(const std::string& path) {
  ASSIGN_OR_RETURN(toml::table root, ParseToml(path));
  std::string admin = kDefaultAdmin;
  RETURN_IF_ERROR(GetString(path, root["admin"]["listen"].node(), "admin.listen", &admin));
  return admin;
}

absl::StatusOr<CtlConfig> ReadCtlConfig(const std::string& path) {
  ASSIGN_OR_RETURN(toml::table root, ParseToml(path));
  CtlConfig c;
  RETURN_IF_ERROR(GetString(path, root["admin"]["listen"].node(), "admin.listen", &c.admin));
  RETURN_IF_ERROR(GetString(path, root["paths"]["spool"].node(), "paths.spool", &c.spool));
  RETURN_IF_ERROR(GetString(path, root["paths"]["log"].node(), "paths.log", &c.log));
  RETURN_IF_ERROR(GetString(path, root["verp"]["domain"].node(), "verp.domain", &c.verp_domain));
  if (const toml::node* keys = root["token_key"].node()) {
    const toml::array* arr = keys->as_array();
    if (arr == nullptr || !arr->is_array_of_tables()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", keys->source().begin.line,
                       ": token_key: must be an array of tables: write each key as [[token_key]]"));
    }
    for (size_t i = 0; i < arr->size(); ++i) {
      const toml::table& t = *arr->get(i)->as_table();
      const std::string where = absl::StrCat("token_key[", i + 1, "]");
      token::KeySpec spec;
      RETURN_IF_ERROR(GetString(path, t.get("id"), where + ".id", &spec.id));
      RETURN_IF_ERROR(GetString(path, t.get("secret_file"), where + ".secret_file",
                                &spec.secret_file));
      if (spec.id.empty() || spec.secret_file.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", t.source().begin.line, ": ",
                                                       where, ": needs an id and a secret_file"));
      }
      c.token_keys.push_back(std::move(spec));
    }
  }
  return c;
}

VerpReport DecodeVerp(const token::Keyring& keys, std::string_view verp_domain,
                      std::string_view address) {
  VerpReport r;
  r.address = std::string(address);
  r.verp_domain = std::string(verp_domain);
  // The domain as CheckVerpAddress sees it: spaces and one pair of <> around.
  std::string_view a = base::StdSv(absl::StripAsciiWhitespace(base::Sv(address)));
  if (a.size() >= 2 && a.front() == '<' && a.back() == '>') a = a.substr(1, a.size() - 2);
  if (const size_t at = a.rfind('@'); at != std::string_view::npos) {
    r.domain = std::string(a.substr(at + 1));
  }
  r.domain_matches = verp_domain.empty() || base::EqualsIgnoreCase(r.domain, verp_domain);
  absl::StatusOr<token::Claim> claim = token::CheckVerpAddress(keys, address);
  if (claim.ok()) {
    r.verified = true;
    r.claim = *std::move(claim);
  } else {
    r.failure = std::string(claim.status().message());
  }
  return r;
}

absl::StatusOr<std::string> JobIdOfNumber(std::string_view jobs_body, uint32_t job_no) {
  dom::parser parser;
  dom::element doc;
  dom::array jobs;
  if (parser.parse(jobs_body.data(), jobs_body.size()).get(doc) != simdjson::SUCCESS ||
      doc["jobs"].get_array().get(jobs) != simdjson::SUCCESS) {
    return Unexpected("no \"jobs\" array");
  }
  bool numbered = false;
  for (dom::element e : jobs) {
    uint64_t n = 0;
    if (e["job_no"].get_uint64().get(n) != simdjson::SUCCESS) continue;
    numbered = true;
    std::string_view id;
    if (n == job_no && e["id"].get_string().get(id) == simdjson::SUCCESS) return std::string(id);
  }
  if (!numbered && jobs.size() > 0) {
    return absl::FailedPreconditionError(
        "volleyd's job list has no job numbers (volleyd is older than this volleyctl)");
  }
  return absl::NotFoundError(absl::StrCat("volleyd's queue has no job number ", job_no));
}

absl::StatusOr<std::string> ReadJobLine(const std::string& path, uint64_t line, size_t max) {
  if (line == 0) return absl::InvalidArgumentError("line numbers start at 1");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(path, "open");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  std::vector<char> buf(size_t{1} << 16);
  uint64_t current = 1;  // the line the next byte belongs to
  std::string out;
  bool started = false;  // a byte of the wanted line (or its LF) was seen
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError(path, "read");
    if (n == 0) break;
    const char* p = buf.data();
    const char* end = p + n;
    while (p < end) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      if (current < line) {
        if (nl == nullptr) break;
        ++current;
        p = nl + 1;
        continue;
      }
      started = true;
      const char* stop = nl != nullptr ? nl : end;
      if (out.size() + static_cast<size_t>(stop - p) > max) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": line ", line, " is longer than ", max, " octets"));
      }
      out.append(p, stop);
      if (nl != nullptr) {
        if (!out.empty() && out.back() == '\r') out.pop_back();
        return out;
      }
      p = end;
    }
  }
  // A last line without LF counts, as intake counts it; an empty one does not.
  if (current == line && started && !out.empty()) {
    if (out.back() == '\r') out.pop_back();
    return out;
  }
  return absl::NotFoundError(absl::StrCat(path, ": has no line ", line));
}

absl::StatusOr<std::string> RecipientOfLine(std::string_view line) {
  dom::parser parser;
  dom::element doc;
  std::string_view to;
  if (parser.parse(line.data(), line.size()).get(doc) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("the line is not JSON");
  }
  if (doc["to"].get_string().get(to) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("the line has no \"to\" (not a recipient line)");
  }
  return std::string(to);
}

absl::StatusOr<std::string> FindAcceptedJobFile(const std::string& spool, std::string_view id) {
  const std::string dir = spool + "/accepted";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return base::ErrnoError(dir, "open");
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) continue;
    names.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  // Files are usually named after their job: read those first, so that a spool
  // with years of accepted jobs is not read whole.
  std::stable_partition(names.begin(), names.end(), [&](const std::string& name) {
    return std::string_view(name).substr(0, id.size()) == id;
  });
  dom::parser parser;
  for (const std::string& name : names) {
    const std::string path = absl::StrCat(dir, "/", name);
    absl::StatusOr<std::string> header = ReadJobLine(path, 1, kMaxJobHeaderLine);
    if (!header.ok()) continue;  // not a job file, or unreadable: not the one
    dom::element doc;
    std::string_view job;
    if (parser.parse(*header).get(doc) == simdjson::SUCCESS &&
        doc["job"].get_string().get(job) == simdjson::SUCCESS && job == id) {
      return path;
    }
  }
  return absl::NotFoundError(absl::StrCat("no job file in ", dir, " is job \"", base::Sv(id),
                                          "\" (moved away, or [paths] spool is not ", spool,
                                          ")"));
}

void LookUpVerp(std::string_view admin, const std::string& spool, VerpReport* r) {
  if (!r->verified) return;
  auto fail_job = [&](std::string_view why) {
    r->job_id_error = std::string(why);
    r->recipient_error = "needs the job id";
  };
  absl::StatusOr<HttpResponse> jobs = Call(admin, "GET", "/jobs", kCallTimeout);
  if (!jobs.ok()) return fail_job(base::StdSv(jobs.status().message()));
  if (jobs->status != 200) return fail_job(absl::StrCat("volleyd: ", ErrorText(jobs->body)));
  absl::StatusOr<std::string> id = JobIdOfNumber(jobs->body, r->claim.job_no);
  if (!id.ok()) return fail_job(base::StdSv(id.status().message()));
  r->job_id = *id;
  if (r->claim.line < 2) {
    r->recipient_error = "line 1 of a job file is its header, not a recipient";
    return;
  }
  absl::StatusOr<std::string> file = FindAcceptedJobFile(spool, *id);
  if (!file.ok()) {
    r->recipient_error = std::string(file.status().message());
    return;
  }
  r->job_file = *file;
  absl::StatusOr<std::string> line = ReadJobLine(*file, r->claim.line, kMaxJobRecipientLine);
  absl::StatusOr<std::string> to =
      line.ok() ? RecipientOfLine(*line) : absl::StatusOr<std::string>(line.status());
  if (!to.ok()) {
    r->recipient_error = line.ok() ? absl::StrCat(*file, ": line ", r->claim.line, ": ",
                                                  to.status().message())
                                   : std::string(to.status().message());
    return;
  }
  r->recipient = *std::move(to);
}

std::string FormatVerpReport(const VerpReport& r, bool json) {
  if (json) {
    std::string out = "{\"address\":";
    base::AppendJsonString(&out, r.address);
    out += ",\"domain\":";
    base::AppendJsonString(&out, r.domain);
    if (!r.verp_domain.empty()) {
      absl::StrAppend(&out, ",\"verp_domain_matches\":", r.domain_matches ? "true" : "false");
    }
    absl::StrAppend(&out, ",\"verified\":", r.verified ? "true" : "false");
    if (!r.verified) {
      out += ",\"error\":";
      base::AppendJsonString(&out, r.failure);
      return out + "}\n";
    }
    out += ",\"key_id\":";
    base::AppendJsonString(&out, r.claim.key_id);
    absl::StrAppend(&out, ",\"job_no\":", r.claim.job_no, ",\"line\":", r.claim.line);
    auto field = [&](std::string_view name, const std::optional<std::string>& value,
                     const std::string& error) {
      absl::StrAppend(&out, ",\"", base::Sv(name), "\":");
      if (value) {
        base::AppendJsonString(&out, *value);
      } else {
        out += "null,\"";
        absl::StrAppend(&out, base::Sv(name), "_error\":");
        base::AppendJsonString(&out, error);
      }
    };
    field("job", r.job_id, r.job_id_error);
    field("recipient", r.recipient, r.recipient_error);
    if (!r.job_file.empty()) {
      out += ",\"job_file\":";
      base::AppendJsonString(&out, r.job_file);
    }
    return out + "}\n";
  }
  std::string out = absl::StrCat("address: ", Printable(r.address), "\n");
  absl::StrAppend(&out, "domain: ", Printable(r.domain));
  if (!r.domain_matches) {
    absl::StrAppend(&out, " (not the [verp] domain, ", Printable(r.verp_domain), ")");
  }
  out += "\n";
  if (!r.verified) {
    absl::StrAppend(&out, "mac: does not verify: ", Printable(r.failure), "\n");
    return out;
  }
  absl::StrAppend(&out, "mac: verifies\nkey_id: ", r.claim.key_id, "\njob_no: ", r.claim.job_no,
                  "\nline: ", r.claim.line, "\n");
  auto field = [&](std::string_view name, const std::optional<std::string>& value,
                   const std::string& error) {
    absl::StrAppend(&out, base::Sv(name), ": ",
                    value ? Printable(*value) : absl::StrCat("- (", Printable(error), ")"),
                    "\n");
  };
  field("job", r.job_id, r.job_id_error);
  field("recipient", r.recipient, r.recipient_error);
  if (!r.job_file.empty()) absl::StrAppend(&out, "job_file: ", Printable(r.job_file), "\n");
  return out;
}

absl::StatusOr<dkim::Algorithm> ParseDkimAlgorithm(std::string_view name) {
  if (name == "rsa" || name == "rsa-sha256") return dkim::Algorithm::kRsaSha256;
  if (name == "ed25519" || name == "ed25519-sha256") return dkim::Algorithm::kEd25519Sha256;
  return absl::InvalidArgumentError(absl::StrCat("--algorithm: \"", Printable(name),
                                                 "\" is neither rsa nor ed25519"));
}

absl::StatusOr<std::string> CheckDkimName(std::string_view option, std::string_view name) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(base::Sv(option), ": \"", Printable(name),
                                                   "\" ", base::Sv(why)));
  };
  std::string_view n = name;
  if (!n.empty() && n.back() == '.') n.remove_suffix(1);
  if (n.empty()) return bad("is empty");
  if (n.size() > 253) return bad("is longer than 253 octets");
  size_t label = 0;
  for (char c : n) {
    if (c == '.') {
      if (label == 0) return bad("has an empty label");
      label = 0;
      continue;
    }
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
      return bad("may hold only letters, digits, '-', '_' and dots");
    }
    if (++label > 63) return bad("has a label longer than 63 octets");
  }
  if (label == 0) return bad("has an empty label");
  return std::string(n);
}

absl::Status WriteNewKeyFile(const std::string& path, std::string_view pem) {
  // O_EXCL: refuse a file that exists, even one made a moment ago by someone else;
  // O_NOFOLLOW: nor write through a symbolic link planted at the path.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) {
      return absl::AlreadyExistsError(
          absl::StrCat(path, ": exists; not overwritten (a key in use would be lost)"));
    }
    return base::ErrnoError(path, "create");
  }
  auto fail = [&](absl::Status st) {
    ::close(fd);
    ::unlink(path.c_str());
    return st;
  };
  // A umask can only take bits away; this makes the mode exactly 0600.
  if (::fchmod(fd, 0600) != 0) return fail(base::ErrnoError(path, "chmod"));
  if (absl::Status st = base::WriteAll(fd, pem, path); !st.ok()) return fail(st);
  if (::fsync(fd) != 0) return fail(base::ErrnoError(path, "fsync"));
  if (::close(fd) != 0) {
    ::unlink(path.c_str());
    return base::ErrnoError(path, "close");
  }
  return absl::OkStatus();
}

DkimKeyInfo DescribeDkimKey(const dkim::PrivateKey& key, std::string_view file,
                            std::string_view selector, std::string_view domain) {
  DkimKeyInfo info;
  info.file = std::string(file);
  info.algorithm = key.algorithm();
  info.bits = key.bits();
  if (!selector.empty() && !domain.empty()) {
    info.name = absl::StrCat(base::Sv(selector), "._domainkey.", base::Sv(domain), ".");
  }
  info.record = key.DnsRecord();
  return info;
}

std::string FormatDkimKey(const DkimKeyInfo& info, bool json) {
  const std::string txt = dkim::DnsTxtStrings(info.record);
  if (!json) return absl::StrCat(info.name, info.name.empty() ? "" : " IN TXT ", txt, "\n");
  std::string out = "{\"file\":";
  base::AppendJsonString(&out, info.file);
  out += ",\"algorithm\":";
  base::AppendJsonString(&out, dkim::AlgorithmName(info.algorithm));
  absl::StrAppend(&out, ",\"bits\":", info.bits, ",\"name\":");
  if (info.name.empty()) {
    out += "null";
  } else {
    base::AppendJsonString(&out, info.name);
  }
  out += ",\"record\":";
  base::AppendJsonString(&out, info.record);
  out += ",\"txt\":";
  base::AppendJsonString(&out, txt);
  return out + "}\n";
}

}  // namespace volley::ctl
