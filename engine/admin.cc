// admin.cc - volleyd's admin API (see admin.h)
//
// http::Server (libmicrohttpd) reads the request and writes the answer; this file
// routes and answers. Everything a client sends is still distrusted: the target
// must be a plain path, every path component is checked before the queue is
// touched, and every string written back is JSON-escaped.
#include "engine/admin.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/json.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "dns/routes.h"
#include "simdjson.h"

namespace volley::engine {
namespace {

// The payload that carries a 405's Allow header value on an Unimplemented status.
constexpr char kAllowPayload[] = "volley.admin/allow";

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
  } else if (parts.size() == 3 && parts[0] == "destinations") {
    // engine/admin_destinations.cc: suspend, unsuspend, retry of one domain.
    ASSIGN_OR_RETURN(req.domain, AdminDomain(parts[1]));
    if (parts[2] == "suspend") {
      req.action = AdminRequest::Action::kSuspend;
    } else if (parts[2] == "unsuspend") {
      req.action = AdminRequest::Action::kUnsuspend;
    } else if (parts[2] == "retry") {
      req.action = AdminRequest::Action::kRetryDomain;
    } else {
      return absl::NotFoundError("no such endpoint");
    }
    allow = "POST";
  } else if (parts.size() == 1 && parts[0] == "queue") {
    req.action = AdminRequest::Action::kQueueSummary;
  } else if (parts.size() == 1 && parts[0] == "jobs") {
    req.action = AdminRequest::Action::kListJobs;
  } else if (parts[0] == "suppressions" && parts.size() == 1) {
    if (method == "GET") {
      req.action = AdminRequest::Action::kListSuppressions;
    } else if (method == "POST") {
      req.action = AdminRequest::Action::kAddSuppressions;
    } else if (method == "DELETE") {
      req.action = AdminRequest::Action::kRemoveSuppression;
    } else {
      return MethodNotAllowed(method, path, "GET, POST, DELETE");
    }
    return req;
  } else if (parts[0] == "suppressions" && parts.size() == 2 && parts[1] == "check") {
    req.action = AdminRequest::Action::kCheckSuppression;
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
    } else if (parts[2] == "retry") {
      req.action = AdminRequest::Action::kRetryJob;
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

std::string ErrorBody(std::string_view message) {
  std::string body = "{\"error\":";
  base::AppendJsonString(&body, message);
  body += "}\n";
  return body;
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

absl::StatusOr<AdminRequest> ParseAdminRequest(const http::Request& request) {
  const std::string_view target = request.target;
  if (target.empty() || target.front() != '/') return BadRequest("request target must be a path");
  // Only the suppression list's endpoints take a query, and only a POST to
  // /suppressions a body.
  const bool takes_query = target == "/suppressions" || target == "/suppressions/check" ||
                           target == "/destinations" || target == "/queue";
  // POST /destinations/D/suspend takes {"for","reason"} (admin_destinations.cc).
  const bool takes_body = (target == "/suppressions" && request.method == "POST") ||
                          IsAdminSuspendTarget(request.method, target);
  if (request.query && !takes_query) {
    return BadRequest("request target must be a plain path (no query, no escapes)");
  }
  for (char c : target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return BadRequest("malformed request target");
    if (c == '?' || c == '#' || c == '%') {
      return BadRequest("request target must be a plain path (no query, no escapes)");
    }
  }
  if (request.Find("Transfer-Encoding") && !takes_body) {
    return BadRequest("request body not accepted");
  }
  if (const std::optional<std::string_view> length = request.Find("Content-Length")) {
    // The HTTP layer has read it as digits already; this refuses what it let by
    // ("-0", "+1") along with every non-zero length.
    if (length->empty() || !std::all_of(length->begin(), length->end(), absl::ascii_isdigit)) {
      return BadRequest("malformed Content-Length");
    }
    if (request.content_length != 0 && !takes_body) {
      return BadRequest("request body not accepted");
    }
  }
  ASSIGN_OR_RETURN(AdminRequest req, Route(request.method, target));
  if (!takes_query) return req;
  if (request.query) {
    ASSIGN_OR_RETURN(req.params, ParseAdminQuery(*request.query));
  }
  // A name the endpoint does not know is refused, not ignored: a misspelt
  // "scope" must not make a DELETE remove the global entry.
  std::vector<std::string_view> known;
  switch (req.action) {
    case AdminRequest::Action::kListSuppressions:
      known = {"after", "after_scope", "limit"};
      break;
    case AdminRequest::Action::kCheckSuppression:
      known = {"address", "from_domain"};
      break;
    case AdminRequest::Action::kRemoveSuppression:
      known = {"address", "scope"};
      break;
    case AdminRequest::Action::kDestinations:
      known = {"all", "limit"};
      break;
    case AdminRequest::Action::kQueueSummary:
      known = {"domain", "job"};
      break;
    default:
      break;
  }
  for (const auto& [name, value] : req.params) {
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      std::string shown;
      base::AppendJsonString(&shown, name.substr(0, 64));
      return BadRequest(absl::StrCat("unknown query parameter ", shown));
    }
  }
  return req;
}

std::string AdminAllow(const absl::Status& status) {
  if (auto allow = status.GetPayload(kAllowPayload)) return std::string(*allow);
  return "";
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
                  ",\"job_no\":", job.job_no, ",\"suppressed\":", p.suppressed,
                  ",\"bounced_async\":", p.bounced_async, ",\"complained\":", p.complained,
                  ",\"unsubscribed\":", p.unsubscribed, "}");
  return out;
}

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Create(
    std::string_view listen, queue::Queue* queue, ReadyJobs* ready, int max_connections,
    absl::Duration request_timeout) {
  auto where = dns::ParseHostPort(listen);
  if (!where.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("admin API: listen address ", where.status().message()));
  }
  http::ServerOptions options;
  options.name = "admin API";
  options.max_connections = max_connections;
  options.threads = kAdminThreads;
  options.max_request_head = kAdminMaxHead;
  options.request_timeout = request_timeout;
  options.max_body = kAdminMaxBody;
  options.error_response = [](int status, std::string_view reason) {
    return http::Response{status, "application/json", ErrorBody(reason), {}};
  };
  ASSIGN_OR_RETURN(std::unique_ptr<http::Server> server,
                   http::Server::Create(where->addr, std::move(options)));
  if (!IsLoopback(where->addr)) {
    base::LogWarning(
        "admin API on %s, not loopback: it has no authentication, anyone who can reach it can "
        "pause and cancel jobs",
        server->address());
  }
  std::unique_ptr<AdminServer> admin(new AdminServer(std::move(server), queue, ready));
  // Every path, so that an unknown one gets the API's own 404 (Route).
  admin->http_->Route("/", [a = admin.get()](const http::Request& r) { return a->Handle(r); });
  return admin;
}

AdminServer::AdminServer(std::unique_ptr<http::Server> http, queue::Queue* queue,
                         ReadyJobs* ready)
    : http_(std::move(http)), queue_(queue), ready_(ready) {}

AdminServer::~AdminServer() { Stop(); }

void AdminServer::Start() {
  base::LogInfo("admin API on %s", http_->address());
  // Rates need samples taken whether anyone asks or not (job_rates.h).
  sampler_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(sampler_mu_);
    while (!sampler_stop_) {
      lock.unlock();
      SampleJobs();
      lock.lock();
      sampler_cv_.wait_for(lock, absl::ToChronoSeconds(kJobRateInterval),
                           [this] { return sampler_stop_; });
    }
  });
  http_->Start();
}

void AdminServer::Stop() {
  http_->Stop();
  {
    std::lock_guard<std::mutex> lock(sampler_mu_);
    sampler_stop_ = true;
  }
  sampler_cv_.notify_all();
  if (sampler_.joinable()) sampler_.join();
}

absl::StatusOr<std::string> AdminServer::JobJson(std::string_view id) {
  ASSIGN_OR_RETURN(std::optional<queue::JobRecord> job, queue_->FindJob(id));
  // Not in the queue: perhaps refused whole at intake (failed/ says why).
  if (!job) return RefusedJobJson(id);
  ASSIGN_OR_RETURN(queue::JobProgress progress, queue_->ReadProgress(job->job_no));
  return AdminJobJson(*job, progress, ReadingOf(*job, progress));
}

http::Response AdminServer::Handle(const http::Request& request) {
  auto error = [](const absl::Status& st) {
    const int status = AdminHttpStatus(st);
    // A queue error is the operator's to read in volleyd's log too.
    if (status == 500) base::LogInfo("admin API: %s", base::StdSv(st.message()));
    http::Response a{status, "application/json", ErrorBody(base::StdSv(st.message())), {}};
    if (std::string allow = AdminAllow(st); !allow.empty()) a.headers.emplace_back("Allow", allow);
    return a;
  };
  auto ok = [](std::string body) {
    return http::Response{200, "application/json", std::move(body), {}};
  };
  absl::StatusOr<AdminRequest> req = ParseAdminRequest(request);
  if (!req.ok()) return error(req.status());
  using Action = AdminRequest::Action;
  absl::StatusOr<queue::JobRecord> changed;
  switch (req->action) {
    case Action::kHealth:
      return ok("{\"ok\":true}\n");
    case Action::kDestinations: {
      // Without all= or limit=, the answer it always was: the troubled ones.
      const std::optional<std::string_view> all = req->Param("all");
      const std::optional<std::string_view> limit_text = req->Param("limit");
      if (all && *all != "0" && *all != "1") return error(BadRequest("all: must be 0 or 1"));
      size_t limit = kAdminDefaultDestinations;
      if (limit_text && (!absl::SimpleAtoi(base::Sv(*limit_text), &limit) || limit < 1 ||
                         limit > kAdminMaxDestinations)) {
        return error(BadRequest(absl::StrCat("limit: must be 1..", kAdminMaxDestinations)));
      }
      // A shard that does not answer in time is shown as it last published.
      if (destinations_ != nullptr) destinations_->Refresh(kAdminDestinationsWait);
      if (!all && !limit_text) {
        return ok(destinations_ != nullptr ? destinations_->Json()
                                           : std::string("{\"destinations\":[]}\n"));
      }
      if (destinations_ == nullptr) {
        return ok("{\"destinations\":[],\"total\":0,\"truncated\":false}\n");
      }
      return ok(destinations_->AllJson(limit, !all || *all == "0"));
    }
    case Action::kQueueSummary:
      return HandleQueueSummary(*req);
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
        body += AdminJobJson(job, *progress, ReadingOf(job, *progress));
      }
      body += "]}\n";
      return ok(std::move(body));
    }
    case Action::kShowJob: {
      absl::StatusOr<std::string> job = JobJson(req->job_id);
      if (!job.ok()) return error(job.status());
      return ok(*std::move(job) + "\n");
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
    case Action::kListSuppressions:
    case Action::kCheckSuppression:
    case Action::kAddSuppressions:
    case Action::kRemoveSuppression:
      return HandleSuppressions(*req, request.body);
    case Action::kSuspend:
    case Action::kUnsuspend:
    case Action::kRetryDomain:
    case Action::kRetryJob:
      return HandleDestinationControl(*req, request.body);
  }
  if (!changed.ok()) return error(changed.status());
  base::LogInfo("job \"%s\" %s (admin API)", changed->id,
                req->action == Action::kPause    ? "paused"
                : req->action == Action::kResume ? "resumed"
                                                 : "cancelled: its queued recipients are being removed");
  // The shard re-reads the record of every job id it is handed: that is how a
  // pause, resume or cancel reaches the recipients it has in hand.
  ready_->Push(req->job_id);
  absl::StatusOr<queue::JobProgress> progress = queue_->ReadProgress(changed->job_no);
  if (!progress.ok()) return error(progress.status());
  return ok(AdminJobJson(*changed, *progress, ReadingOf(*changed, *progress)) + "\n");
}

}  // namespace volley::engine
