// ctl.cc - volleyctl's logic (see ctl.h)
#include "tools/volleyctl/ctl.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/status.h"
#include "base/strings.h"
#include "dns/routes.h"
#include "simdjson.h"
#include "toml++/toml.h"

namespace volley::ctl {
namespace {

namespace dom = simdjson::dom;

// The counters of a job object, in the order volleyctl shows them.
constexpr const char* kCounters[] = {"total",   "delivered", "deferred", "bounced",
                                     "expired", "cancelled", "pending",  "deferrals"};
constexpr size_t kNumCounters = sizeof kCounters / sizeof kCounters[0];

struct Job {
  std::string id;
  std::string state;
  bool paused = false;
  std::optional<int64_t> priority;
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
  if (e["queued_at"].get_string().get(s) == simdjson::SUCCESS) job.queued_at = std::string(s);
  for (size_t i = 0; i < kNumCounters; ++i) {
    if (e[kCounters[i]].get_uint64().get(job.counters[i]) != simdjson::SUCCESS) {
      return Unexpected(absl::StrCat("a job without \"", kCounters[i], "\""));
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

// Printable - a string from volleyd as it may be shown on a terminal: control
// bytes become '?', so that no answer can send escape sequences to it.
std::string Printable(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return out;
}

absl::Status Errno(std::string_view admin, std::string_view what, int err) {
  return absl::UnavailableError(absl::StrCat("cannot ", base::Sv(what), " volleyd's admin API at ",
                                              base::Sv(admin), ": ", std::strerror(err),
                                              " (is volleyd running?)"));
}

// WaitFor - poll one fd for `events` until `deadline`.
absl::Status WaitFor(int fd, short events, absl::Time deadline, std::string_view admin) {
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "volleyd's admin API at ", base::Sv(admin), " did not answer within ",
          absl::FormatDuration(kCallTimeout)));
    }
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (n > 0) return absl::OkStatus();
    if (n < 0 && errno != EINTR) return Errno(admin, "poll", errno);
  }
}

}  // namespace

absl::StatusOr<HttpResponse> ParseHttpResponse(std::string_view raw) {
  const size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string_view::npos) return Unexpected("no complete HTTP answer");
  const std::string_view head = raw.substr(0, head_end + 2);
  HttpResponse r;
  // "HTTP/1.1 200 OK"
  if (head.size() < 12 || head.substr(0, 5) != "HTTP/" || head[8] != ' ' ||
      !absl::SimpleAtoi(base::Sv(head.substr(9, 3)), &r.status) || r.status < 100 ||
      r.status > 599) {
    return Unexpected("not an HTTP status line");
  }
  r.body = std::string(raw.substr(head_end + 4));
  for (size_t pos = head.find("\r\n") + 2; pos < head.size();) {
    const size_t eol = head.find("\r\n", pos);
    const std::string_view line = head.substr(pos, eol - pos);
    pos = eol + 2;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    if (base::EqualsIgnoreCase(line.substr(0, colon), "Content-Length")) {
      uint64_t length = 0;
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(base::Sv(line.substr(colon + 1))), &length) ||
          length != r.body.size()) {
        return Unexpected(absl::StrCat("answer cut short (", r.body.size(), " bytes of body)"));
      }
    }
  }
  return r;
}

absl::StatusOr<HttpResponse> Call(std::string_view admin, std::string_view method,
                                  std::string_view path, absl::Duration timeout) {
  auto where = dns::ParseHostPort(admin);
  if (!where.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("admin address ", where.status().message()));
  }
  const absl::Time deadline = absl::Now() + timeout;
  const int fd = ::socket(where->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno(admin, "open a socket to", errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&where->addr), where->addr_len) != 0) {
    if (errno != EINPROGRESS) return Errno(admin, "connect to", errno);
    RETURN_IF_ERROR(WaitFor(fd, POLLOUT, deadline, admin));
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return Errno(admin, "connect to", err);
  }
  const std::string request =
      absl::StrCat(base::Sv(method), " ", base::Sv(path), " HTTP/1.1\r\nHost: ", where->name,
                   "\r\nUser-Agent: volleyctl\r\nAccept: application/json\r\n",
                   method == "POST" ? "Content-Length: 0\r\n" : "", "Connection: close\r\n\r\n");
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      RETURN_IF_ERROR(WaitFor(fd, POLLOUT, deadline, admin));
    } else {
      return Errno(admin, "send to", errno);
    }
  }
  std::string raw;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (raw.size() + static_cast<size_t>(n) > kMaxResponse) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "volleyd's answer is longer than ", kMaxResponse >> 20, " MiB"));
      }
      raw.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno == EAGAIN || errno == EINTR) {
      RETURN_IF_ERROR(WaitFor(fd, POLLIN, deadline, admin));
    } else {
      return Errno(admin, "read from", errno);
    }
  }
  return ParseHttpResponse(raw);
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
  rows.push_back({"ID", "STATE", "PAUSED", "TOTAL", "DELIVERED", "DEFERRED", "BOUNCED", "EXPIRED",
                  "CANCELLED", "PENDING", "DONE%"});
  for (dom::element e : jobs) {
    ASSIGN_OR_RETURN(Job job, ReadJob(e));
    std::vector<std::string> row = {Printable(job.id), Printable(job.state),
                                    job.paused ? "yes" : "no"};
    for (const char* name : {"total", "delivered", "deferred", "bounced", "expired", "cancelled",
                             "pending"}) {
      row.push_back(absl::StrCat(job.Counter(name)));
    }
    row.push_back(PercentDone(job));
    rows.push_back(std::move(row));
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line += "  ";
      // Text columns to the left, numbers to the right.
      const std::string pad(width[i] - row[i].size(), ' ');
      line += i < 3 ? row[i] + pad : pad + row[i];
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
  ASSIGN_OR_RETURN(Job job, ReadJob(doc));
  std::string out = absl::StrCat("id: ", Printable(job.id), "\nstate: ", Printable(job.state),
                                 "\npaused: ", job.paused ? "yes" : "no", "\n");
  if (job.priority) absl::StrAppend(&out, "priority: ", *job.priority, "\n");
  if (!job.queued_at.empty()) absl::StrAppend(&out, "queued_at: ", Printable(job.queued_at), "\n");
  for (size_t i = 0; i < kNumCounters; ++i) {
    absl::StrAppend(&out, kCounters[i], ": ", job.counters[i], "\n");
  }
  absl::StrAppend(&out, "done: ", PercentDone(job), "%\n");
  return out;
}

absl::StatusOr<std::string> AdminFromConfig(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.source().begin.line, ": ", base::Sv(e.description())));
  }
  const toml::node* listen = root["admin"]["listen"].node();
  if (listen == nullptr) return std::string(kDefaultAdmin);
  const auto* s = listen->as_string();
  if (s == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", listen->source().begin.line, ": admin.listen: must be a string"));
  }
  return std::string(s->get());
}

}  // namespace volley::ctl
