// admin.cc - volleyd's admin API (see admin.h)
//
// The server is deliberately small: one thread, poll(2), Connection: close, no
// request body, no keep-alive, no chunked encoding. Everything a client sends
// is distrusted: the head is bounded, every path component is checked before the
// queue is touched, and every string written back is JSON-escaped.
#include "engine/admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/json.h"
#include "base/status.h"
#include "base/strings.h"
#include "dns/routes.h"
#include "simdjson.h"

namespace volley::engine {
namespace {

// The payload that carries a 405's Allow header value on an Unimplemented status.
constexpr char kAllowPayload[] = "volley.admin/allow";
// Longest method token accepted; the longest real one (OPTIONS, CONNECT) is 7.
constexpr size_t kMaxMethod = 16;
// After the answer, unread input is drained (so that closing does not reset the
// connection under a client still reading the answer), but no more than this
// and for no longer than kDrainTime.
constexpr size_t kMaxDrain = 64 * 1024;
constexpr absl::Duration kDrainTime = absl::Seconds(1);
// Pending connections the kernel keeps while kAdminMaxConnections are served.
constexpr int kListenBacklog = 64;

bool IsTokenChar(char c) {
  // RFC 9110 section 5.6.2 tchar.
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

absl::Status BadRequest(std::string_view why) {
  return absl::InvalidArgumentError(base::Sv(why));
}

absl::Status MethodNotAllowed(std::string_view method, std::string_view path,
                              std::string_view allow) {
  absl::Status st = absl::UnimplementedError(absl::StrCat(
      "method ", base::Sv(method), " not allowed for ", base::Sv(path), " (use ", base::Sv(allow), ")"));
  st.SetPayload(kAllowPayload, absl::Cord(base::Sv(allow)));
  return st;
}

// CheckHeaderLine - one "name: value" line; returns the name and value.
absl::Status CheckHeaderLine(std::string_view line, std::string_view* name,
                             std::string_view* value) {
  if (line.front() == ' ' || line.front() == '\t') {
    return BadRequest("obsolete header line folding not accepted");
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return BadRequest("malformed header line");
  *name = line.substr(0, colon);
  for (char c : *name) {
    if (!IsTokenChar(c)) return BadRequest("malformed header name");
  }
  *value = line.substr(colon + 1);
  for (char c : *value) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return BadRequest("control character in a header value");
  }
  *value = base::StdSv(absl::StripAsciiWhitespace(base::Sv(*value)));
  return absl::OkStatus();
}

// Route - map method and path to an action. The path has been checked to be a
// plain absolute path (no query, no '%').
absl::StatusOr<AdminRequest> Route(std::string_view method, std::string_view path) {
  std::vector<std::string_view> parts;
  for (std::string_view rest = path.substr(1);;) {
    const size_t slash = rest.find('/');
    parts.push_back(rest.substr(0, slash));
    if (slash == std::string_view::npos) break;
    rest = rest.substr(slash + 1);
  }
  AdminRequest req;
  std::string_view allow = "GET";
  if (parts.size() == 1 && parts[0] == "health") {
    req.action = AdminRequest::Action::kHealth;
  } else if (parts.size() == 1 && parts[0] == "destinations") {
    req.action = AdminRequest::Action::kDestinations;
  } else if (parts.size() == 1 && parts[0] == "jobs") {
    req.action = AdminRequest::Action::kListJobs;
  } else if ((parts.size() == 2 || parts.size() == 3) && parts[0] == "jobs") {
    // The id is checked before anything else about the path, so that no
    // malformed id can reach the queue whatever follows it.
    if (!IsAdminJobId(parts[1])) {
      return BadRequest(absl::StrCat("job id must match [A-Za-z0-9._-]{1,", kAdminMaxJobId, "}"));
    }
    req.job_id = std::string(parts[1]);
    if (parts.size() == 2) {
      req.action = AdminRequest::Action::kShowJob;
    } else if (parts[2] == "pause") {
      req.action = AdminRequest::Action::kPause;
      allow = "POST";
    } else if (parts[2] == "resume") {
      req.action = AdminRequest::Action::kResume;
      allow = "POST";
    } else if (parts[2] == "cancel") {
      req.action = AdminRequest::Action::kCancel;
      allow = "POST";
    } else {
      return absl::NotFoundError("no such endpoint");
    }
  } else {
    return absl::NotFoundError("no such endpoint");
  }
  if (method != allow) return MethodNotAllowed(method, path, allow);
  return req;
}

// JobPriority - the job header's "priority" (5 when absent, as queue/job.h
// says), or nullopt when the header cannot be read.
std::optional<int> JobPriority(std::string_view header_json) {
  simdjson::ondemand::parser parser;
  const simdjson::padded_string padded(header_json.data(), header_json.size());
  simdjson::ondemand::document doc;
  if (parser.iterate(padded).get(doc) != simdjson::SUCCESS) return std::nullopt;
  int64_t priority = 0;
  const simdjson::error_code error = doc.find_field("priority").get_int64().get(priority);
  if (error == simdjson::NO_SUCH_FIELD) return 5;
  if (error != simdjson::SUCCESS || priority < 0 || priority > 9) return std::nullopt;
  return static_cast<int>(priority);
}

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 431:
      return "Request Header Fields Too Large";
    default:
      return "Internal Server Error";
  }
}

std::string ErrorBody(std::string_view message) {
  std::string body = "{\"error\":";
  base::AppendJsonString(&body, message);
  body += "}\n";
  return body;
}

std::string Response(int status, std::string_view body, std::string_view allow) {
  std::string out = absl::StrCat("HTTP/1.1 ", status, " ", Reason(status),
                                 "\r\nContent-Type: application/json\r\nContent-Length: ",
                                 body.size(), "\r\nCache-Control: no-store\r\nConnection: close\r\n");
  if (!allow.empty()) absl::StrAppend(&out, "Allow: ", base::Sv(allow), "\r\n");
  absl::StrAppend(&out, "\r\n", base::Sv(body));
  return out;
}

int Millis(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d) + 1, 1000));
}

bool IsLoopback(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&addr);
    return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
  }
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&addr);
  return IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
}

}  // namespace

bool IsAdminJobId(std::string_view id) {
  if (id.empty() || id.size() > kAdminMaxJobId) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

absl::StatusOr<AdminRequest> ParseAdminRequest(std::string_view head) {
  if (head.size() > kAdminMaxHead) {
    return absl::ResourceExhaustedError(
        absl::StrCat("request line and headers longer than ", kAdminMaxHead, " bytes"));
  }
  size_t eol = head.find("\r\n");
  if (eol == std::string_view::npos) return BadRequest("request line must end with CRLF");
  const std::string_view line = head.substr(0, eol);
  // request-line = method SP request-target SP HTTP-version (RFC 9112 section 3)
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return BadRequest("malformed request line");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (method.empty() || method.size() > kMaxMethod ||
      !std::all_of(method.begin(), method.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
    return BadRequest("malformed method");
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return BadRequest("only HTTP/1.0 and 1.1");
  if (target.empty() || target.front() != '/') return BadRequest("request target must be a path");
  for (char c : target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return BadRequest("malformed request target");
    if (c == '?' || c == '#' || c == '%') {
      return BadRequest("request target must be a plain path (no query, no escapes)");
    }
  }

  bool ended = false;
  for (size_t pos = eol + 2; pos < head.size();) {
    eol = head.find("\r\n", pos);
    if (eol == std::string_view::npos) return BadRequest("header line must end with CRLF");
    const std::string_view header = head.substr(pos, eol - pos);
    pos = eol + 2;
    if (header.empty()) {
      if (pos != head.size()) return BadRequest("data after the request head");
      ended = true;
      break;
    }
    std::string_view name, value;
    RETURN_IF_ERROR(CheckHeaderLine(header, &name, &value));
    if (base::EqualsIgnoreCase(name, "Transfer-Encoding")) {
      return BadRequest("request body not accepted");
    }
    if (base::EqualsIgnoreCase(name, "Content-Length")) {
      uint64_t length = 0;
      if (value.empty() || !std::all_of(value.begin(), value.end(), absl::ascii_isdigit) ||
          !absl::SimpleAtoi(base::Sv(value), &length)) {
        return BadRequest("malformed Content-Length");
      }
      if (length != 0) return BadRequest("request body not accepted");
    }
  }
  if (!ended) return BadRequest("request head must end with an empty line");
  return Route(method, target);
}

int AdminHttpStatus(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kUnimplemented:
      return 405;
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 431;
    default:
      return 500;
  }
}

std::string AdminJobJson(const queue::JobRecord& job, const queue::JobProgress& p) {
  std::string out = "{\"id\":";
  base::AppendJsonString(&out, job.id);
  out += ",\"state\":";
  base::AppendJsonString(&out, queue::JobStateName(job.state));
  absl::StrAppend(&out, ",\"paused\":", job.paused ? "true" : "false");
  if (const std::optional<int> priority = JobPriority(job.header_json)) {
    absl::StrAppend(&out, ",\"priority\":", *priority);
  }
  out += ",\"queued_at\":";
  base::AppendJsonString(
      &out, base::StdSv(absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", job.queued_at, absl::UTCTimeZone())));
  absl::StrAppend(&out, ",\"total\":", p.total, ",\"delivered\":", p.delivered,
                  ",\"deferred\":", p.deferred, ",\"bounced\":", p.bounced,
                  ",\"expired\":", p.expired, ",\"cancelled\":", p.cancelled,
                  ",\"pending\":", p.pending(), ",\"deferrals\":", p.deferrals,
                  // Last, as fields are only ever added: the number a VERP or
                  // unsubscribe token carries (engine/token/token.h).
                  ",\"job_no\":", job.job_no, "}");
  return out;
}

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Create(std::string_view listen,
                                                                 queue::Queue* queue,
                                                                 ReadyJobs* ready) {
  auto where = dns::ParseHostPort(listen);
  if (!where.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("admin API: listen address ", where.status().message()));
  }
  auto fail = [&](const char* what, int fd) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    return absl::UnavailableError(absl::StrCat("admin API: cannot ", what, " on ", where->name,
                                               ": ", std::strerror(err)));
  };
  const int fd = ::socket(where->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("create a socket", -1);
  const int one = 1;
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&where->addr), where->addr_len) != 0) {
    return fail("bind", fd);
  }
  if (::listen(fd, kListenBacklog) != 0) return fail("listen", fd);
  // The real port, for a config that asked for port... (ParseHostPort refuses 0,
  // but getsockname is the truth either way).
  std::string address = where->name;
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) == 0) {
    const uint16_t port = ntohs(bound.ss_family == AF_INET
                                    ? reinterpret_cast<const sockaddr_in*>(&bound)->sin_port
                                    : reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port);
    address = bound.ss_family == AF_INET ? absl::StrCat(where->host, ":", port)
                                         : absl::StrCat("[", where->host, "]:", port);
  }
  const int stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd < 0) return fail("create an eventfd", fd);
  if (!IsLoopback(where->addr)) {
    std::fprintf(stderr,
                 "volleyd: warning: admin API on %s, not loopback: it has no authentication, "
                 "anyone who can reach it can pause and cancel jobs\n",
                 address.c_str());
  }
  return std::unique_ptr<AdminServer>(new AdminServer(fd, stop_fd, std::move(address), queue, ready));
}

AdminServer::AdminServer(int listen_fd, int stop_fd, std::string address, queue::Queue* queue,
                         ReadyJobs* ready)
    : listen_fd_(listen_fd), stop_fd_(stop_fd), address_(std::move(address)), queue_(queue),
      ready_(ready) {}

AdminServer::~AdminServer() {
  Stop();
  ::close(listen_fd_);
  ::close(stop_fd_);
}

void AdminServer::Start() {
  std::fprintf(stderr, "volleyd: admin API on %s\n", address_.c_str());
  thread_ = std::thread([this] { Loop(); });
}

void AdminServer::Stop() {
  stop_.store(true);
  const uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::string> AdminServer::JobJson(std::string_view id) {
  ASSIGN_OR_RETURN(std::optional<queue::JobRecord> job, queue_->FindJob(id));
  if (!job) return absl::NotFoundError(absl::StrCat("no such job: ", base::Sv(id)));
  ASSIGN_OR_RETURN(queue::JobProgress progress, queue_->ReadProgress(job->job_no));
  return AdminJobJson(*job, progress);
}

AdminServer::Answer AdminServer::Handle(std::string_view head) {
  auto error = [](const absl::Status& st) {
    const int status = AdminHttpStatus(st);
    // A queue error is the operator's to read in volleyd's log too.
    if (status == 500) {
      std::fprintf(stderr, "volleyd: admin API: %s\n", std::string(st.message()).c_str());
    }
    Answer a{status, ErrorBody(base::StdSv(st.message())), ""};
    if (auto allow = st.GetPayload(kAllowPayload)) a.allow = std::string(*allow);
    return a;
  };
  absl::StatusOr<AdminRequest> req = ParseAdminRequest(head);
  if (!req.ok()) return error(req.status());
  using Action = AdminRequest::Action;
  absl::StatusOr<queue::JobRecord> changed;
  switch (req->action) {
    case Action::kHealth:
      return Answer{200, "{\"ok\":true}\n", ""};
    case Action::kDestinations:
      return Answer{200, destinations_ != nullptr ? destinations_->Json()
                                                  : std::string("{\"destinations\":[]}\n"),
                    ""};
    case Action::kListJobs: {
      // XXX(memory): ListJobs copies every job record with its header (the
      // message template, up to 16 MiB each) to build a list of ~300-byte
      // objects: fine for the tens of jobs a queue holds, not for thousands.
      absl::StatusOr<std::vector<queue::JobRecord>> jobs = queue_->ListJobs();
      if (!jobs.ok()) return error(jobs.status());
      std::string body = "{\"jobs\":[";
      for (size_t i = 0; i < jobs->size(); ++i) {
        const queue::JobRecord& job = (*jobs)[i];
        absl::StatusOr<queue::JobProgress> progress = queue_->ReadProgress(job.job_no);
        if (!progress.ok()) return error(progress.status());
        if (i > 0) body += ",";
        body += AdminJobJson(job, *progress);
      }
      body += "]}\n";
      return Answer{200, std::move(body), ""};
    }
    case Action::kShowJob: {
      absl::StatusOr<std::string> job = JobJson(req->job_id);
      if (!job.ok()) return error(job.status());
      return Answer{200, *std::move(job) + "\n", ""};
    }
    case Action::kPause:
      changed = queue_->SetPaused(req->job_id, true);
      break;
    case Action::kResume:
      changed = queue_->SetPaused(req->job_id, false);
      break;
    case Action::kCancel:
      changed = queue_->CancelJob(req->job_id);
      break;
  }
  if (!changed.ok()) return error(changed.status());
  // The shard re-reads the record of every job id it is handed: that is how a
  // pause, resume or cancel reaches the recipients it has in hand.
  ready_->Push(req->job_id);
  absl::StatusOr<queue::JobProgress> progress = queue_->ReadProgress(changed->job_no);
  if (!progress.ok()) return error(progress.status());
  return Answer{200, AdminJobJson(*changed, *progress) + "\n", ""};
}

void AdminServer::Loop() {
  enum class Phase { kRead, kWrite, kDrain };
  struct Conn {
    int fd = -1;
    Phase phase = Phase::kRead;
    absl::Time deadline;
    std::string in;   // at most kAdminMaxHead + 1 bytes
    std::string out;  // the whole answer
    size_t sent = 0;
    size_t drained = 0;
  };
  std::vector<Conn> conns;
  std::vector<pollfd> fds;
  auto close_conn = [](Conn& c) {
    ::close(c.fd);
    c.fd = -1;
  };
  auto answer = [this](Conn& c, int status, std::string body, std::string_view allow) {
    c.out = Response(status, body, allow);
    c.phase = Phase::kWrite;
    c.deadline = absl::Now() + kAdminTimeout;
  };

  // Out of descriptors, accept() fails while the listen socket stays readable:
  // stop accepting for a moment rather than spin.
  absl::Time accept_after = absl::InfinitePast();
  while (!stop_.load()) {
    fds.clear();
    fds.push_back({stop_fd_, POLLIN, 0});
    const bool accepting = static_cast<int>(conns.size()) < kAdminMaxConnections &&
                           absl::Now() >= accept_after;
    fds.push_back({accepting ? listen_fd_ : -1, POLLIN, 0});
    absl::Time next = absl::InfiniteFuture();
    if (accept_after > absl::Now()) next = accept_after;
    for (const Conn& c : conns) {
      fds.push_back({c.fd, static_cast<short>(c.phase == Phase::kWrite ? POLLOUT : POLLIN), 0});
      next = std::min(next, c.deadline);
    }
    const int timeout = next == absl::InfiniteFuture() ? 1000 : Millis(next - absl::Now());
    if (::poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR) {
      std::fprintf(stderr, "volleyd: admin API: poll: %s\n", std::strerror(errno));
      break;
    }
    if (fds[0].revents != 0) break;
    const absl::Time now = absl::Now();

    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      const short revents = fds[i + 2].revents;
      if (now >= c.deadline) {  // a silent, trickling or stuck client
        close_conn(c);
        continue;
      }
      if (revents == 0) continue;
      if (c.phase == Phase::kRead) {
        char buf[4096];
        for (;;) {
          const size_t room = kAdminMaxHead + 1 - c.in.size();
          const ssize_t n = ::recv(c.fd, buf, std::min(room, sizeof buf), 0);
          if (n > 0) {
            c.in.append(buf, static_cast<size_t>(n));
            if (c.in.size() > kAdminMaxHead || c.in.find("\r\n\r\n") != std::string::npos) break;
            continue;
          }
          if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
          // EOF or an error before a whole head: nobody to answer.
          if (c.in.find("\r\n\r\n") == std::string::npos) close_conn(c);
          break;
        }
        if (c.fd < 0) continue;
        const size_t end = c.in.find("\r\n\r\n");
        if (end != std::string::npos && end + 4 <= kAdminMaxHead) {
          // Bytes past the head (a body the client sent anyway) are left unread;
          // the drain after the answer takes them.
          Answer a = Handle(std::string_view(c.in).substr(0, end + 4));
          answer(c, a.status, std::move(a.body), a.allow);
        } else if (c.in.size() > kAdminMaxHead) {
          answer(c, 431,
                 ErrorBody(absl::StrCat("request line and headers longer than ", kAdminMaxHead,
                                        " bytes")),
                 "");
        }
        continue;
      }
      if (c.phase == Phase::kWrite) {
        while (c.sent < c.out.size()) {
          const ssize_t n =
              ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
          if (n > 0) {
            c.sent += static_cast<size_t>(n);
            continue;
          }
          if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
          close_conn(c);
          break;
        }
        if (c.fd >= 0 && c.sent == c.out.size()) {
          ::shutdown(c.fd, SHUT_WR);
          c.phase = Phase::kDrain;
          c.deadline = now + kDrainTime;
          std::string().swap(c.out);
          std::string().swap(c.in);
        }
        continue;
      }
      // kDrain: read and discard until the client closes.
      char buf[4096];
      for (;;) {
        const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n > 0 && c.drained + static_cast<size_t>(n) <= kMaxDrain) {
          c.drained += static_cast<size_t>(n);
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
        close_conn(c);
        break;
      }
    }
    conns.erase(std::remove_if(conns.begin(), conns.end(), [](const Conn& c) { return c.fd < 0; }),
                conns.end());

    if (accepting && (fds[1].revents & POLLIN) != 0) {
      while (static_cast<int>(conns.size()) < kAdminMaxConnections) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            accept_after = now + absl::Milliseconds(100);
          }
          break;  // EAGAIN (nothing left), ECONNABORTED: poll again
        }
        Conn c;
        c.fd = fd;
        c.deadline = now + kAdminTimeout;
        conns.push_back(std::move(c));
      }
    }
  }
  for (Conn& c : conns) close_conn(c);
}

}  // namespace volley::engine
