// admin.h - volleyd's admin API: job control and the suppression list over HTTP on loopback
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(auto admin, AdminServer::Create("127.0.0.1:9465", queue, &ready_jobs));
//   admin->SetDestinationStates(&states);
//   admin->SetSuppressionList(list.get());   // /suppressions
//   admin->Start();                  // answers from now on, on http::Server's threads
//   admin->Stop();                   // any thread; joins
//
//   ASSIGN_OR_RETURN(AdminRequest r, ParseAdminRequest(request));   // pure, for tests
//
// DESCRIPTION
//   The endpoints (all answers are JSON; an error is {"error": "..."}):
//
//     GET  /health                 {"ok":true}
//     GET  /destinations           {"destinations":[...]}: those backed off or suspended
//                                  (docs/config.md, "Adaptive backoff"), then the
//                                  domains an operator suspended (AdminSuspensionJson)
//     GET  /destinations?all=1&limit=N
//                                  {"destinations":[...],"total":N,"truncated":B}: every
//                                  destination the shards hold, busiest (queued) first,
//                                  at most N (kAdminDefaultDestinations, 1..
//                                  kAdminMaxDestinations); all=0 (or no all) with a
//                                  limit: only the busy and the troubled ones
//     GET  /queue?domain=D&job=J   {"ready","deferred","scheduled","in_flight","total",
//                                  "ages":{"0-5m":N,...},"oldest_queued_at",
//                                  "oldest_age_seconds","next_due","scanned",
//                                  "truncated"}: a bounded scan of the queue
//                                  (queue_summary.h)
//     GET  /jobs                   {"jobs":[job, ...]}, every job in the queue
//     GET  /jobs/ID                job
//     POST /jobs/ID/pause          job, after Queue::SetPaused(ID, true)
//     POST /jobs/ID/resume         job, after Queue::SetPaused(ID, false)
//     POST /jobs/ID/cancel         job, after Queue::CancelJob(ID)
//     POST /jobs/ID/retry          {"made_due":N,"shards","shards_answered","more"}:
//                                  the job's deferred recipients made due now
//
//   An operator's hold on a recipient domain D (engine/destination_control.h,
//   admin_destinations.cc):
//
//     POST /destinations/D/suspend    body: empty or {"for":"2h","reason":"..."};
//                                     AdminSuspensionJson of the suspension
//     POST /destinations/D/unsuspend  {"name","suspended":false,"released":N,...};
//                                     404 when D is not suspended
//     POST /destinations/D/retry      {"made_due":N,...}, as /jobs/ID/retry
//
//   The suppression list (queue/suppression.h, docs/feedback.md); these take
//   a query (percent-decoded; '+' is a plus, not a space) and POST a body:
//
//     GET    /suppressions?after=A&after_scope=S&limit=N
//                                  {"entries":[entry, ...],"next":{"after","after_scope"}
//                                  or null,"approximate_count":N}: a page in key order
//                                  (by address, then scope), from the start when no
//                                  `after`; limit 1..kAdminMaxSuppressionPage (1000)
//     GET    /suppressions/check?address=A&from_domain=D
//                                  {"suppressed":true,"entry":entry} or {"suppressed":false}
//     POST   /suppressions         body: one entry {"address", "scope", "reason",
//                                  "source", "expires", "added"} (only address is
//                                  required; reason "manual", source "admin API",
//                                  added now, expires never), or {"entries":[...]};
//                                  answers {"added":N,"skipped":M,"errors":[{"index",
//                                  "error"}]}: a batch adds its good entries in one
//                                  write and names each bad one by index; a single
//                                  bad entry is a 400
//     DELETE /suppressions?address=A&scope=S
//                                  {"removed":true}, or 404 when there was no entry
//
//   An entry is {"address","scope","reason","source","added","expires"}; times
//   are RFC 3339 UTC ("2026-12-06T17:00:00Z"), expires null for never. In a
//   POST, "expires" may also be a duration from now ("30d"), and "added" an
//   RFC 3339 time (an import keeps the time an export wrote).
//
//   A job object is {"id","state","paused","priority","queued_at","total",
//   "delivered","deferred","bounced","expired","cancelled","pending","deferrals",
//   "job_no","suppressed","bounced_async","complained","unsubscribed",
//   "rate","eta_seconds","eta","rejected","send_after","expires"}
//   (docs/volleyctl.md): rate in recipients/s over the last minute and the ETA
//   from it (job_rates.h; null while unknown), rejected the lines intake
//   skipped (its <job>.rejects.jsonl in accepted/; null when unknown), and a
//   ready job whose send_after is still ahead is in state "scheduled". A job
//   refused whole is not in the queue: GET /jobs/ID then answers
//   {"id","state":"refused","file":"failed/NAME","error":"..."} from the
//   spool's failed/ (SetSpool), and 404 only when neither knows it. After a change the job id is pushed into the shard's
//   ReadyJobs mailbox: the shard re-reads the job's record for every id it is
//   handed, which is how it learns that the job is paused, resumed or cancelled.
//
//   There is no authentication: anyone who can connect can pause or cancel
//   every job. That is why the default address is loopback and a config must
//   name another address explicitly (docs/config.md, [admin] listen).
//
//   The HTTP is engine/http/server.h's (libmicrohttpd): it reads and bounds the
//   request head; this file only routes what it parsed and answers.
//
// CONTRACT
//   Requests are served on http::Server's kAdminThreads event loops; the
//   queue calls they make are short RocksDB
//   reads and writes, beside the shard's and intake's (Queue is thread-safe).
//   A request that arrives between Create and Start waits for Start.
//
// BOUNDS
//   kAdminMaxHead (8 KiB) of request line and headers, else 431 and close;
//   kAdminMaxConnections (256, [admin] max_connections) held at once, past
//   which the oldest connection that has not sent its head is closed;
//   kAdminTimeout (5 s, [admin] request_timeout) to send the request head,
//   again for the body, and without progress while taking the answer, else
//   the connection is closed. A request body is read up to kAdminMaxBody (4 MiB, else 413) and
//   accepted only by POST /suppressions and POST /destinations/D/suspend (others: 400), whose batch holds at
//   most kAdminMaxSuppressionBatch (5000) entries; a query only by
//   /suppressions, /destinations and /queue, at most kAdminMaxQueryParams (8)
//   parameters. GET /queue scans at most kQueueSummaryMaxScan recipients
//   (queue_summary.h), one scan at a time; the job sampler reads every job's
//   record and counters each kJobRateInterval. Connection: close after every
//   answer.
//
// ERRORS
//   Create fails (Unavailable, naming the address) when the address cannot be
//   bound. HTTP status of a failed request: 400 malformed request or bad job
//   id, 431 head too large, 404 unknown path or job, 405 wrong method for the
//   path, 409 the job's state does not allow the change, 500 queue error.
//   Suppressions: 400 naming the field ("address: empty", "limit: must be
//   1..10000", "unknown query parameter \"x\""), 404 no entry to delete, 413 a
//   body over kAdminMaxBody, 500 a list error or no list (SetSuppressionList).
//   Suspend, unsuspend, retry: 400 naming the field ("domain: ...", "for: must
//   be 1s..7d", "unknown field \"x\""), 404 not suspended or no such job, 503
//   when the delivery shards did not answer within kControlAnswerWait.
//
// SEE ALSO
//   docs/volleyctl.md, engine/job_rates.h, engine/queue_summary.h, tools/volleyctl/, queue/queue.h (job control), engine/http/server.h
#ifndef VOLLEY_ENGINE_ADMIN_H_
#define VOLLEY_ENGINE_ADMIN_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <unordered_map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/destination_control.h"
#include "engine/intake.h"
#include "engine/job_rates.h"
#include "engine/http/server.h"
#include "queue/queue.h"
#include "queue/suppression.h"

namespace volley::engine {

// Request line and headers of one request, at most. Default: 8 KiB.
inline constexpr size_t kAdminMaxHead = 8192;
// Connections held at once ([admin] max_connections); one more closes the
// oldest that has not sent its request head (engine/http/server.h), so idle
// connections never keep volleyctl out. Default: 256.
inline constexpr int kAdminMaxConnections = 256;
// Event loops serving them; handlers (short RocksDB reads and writes) run on
// them. Default: 2.
inline constexpr int kAdminThreads = 2;
// Time a client has to send its request head, then its body, and the
// inactivity timeout while it takes the answer ([admin] request_timeout).
inline constexpr absl::Duration kAdminTimeout = absl::Seconds(5);
// Longest job id: queue::JobLimits::max_job_id's default.
inline constexpr size_t kAdminMaxJobId = 128;
// Longest request body (POST /suppressions only): a batch of
// kAdminMaxSuppressionBatch entries of several hundred octets each.
inline constexpr size_t kAdminMaxBody = size_t{4} << 20;
// Entries in one POST /suppressions, and in one page of GET /suppressions
// (kAdminDefaultSuppressionPage when no limit is given).
inline constexpr size_t kAdminMaxSuppressionBatch = 5000;
inline constexpr size_t kAdminMaxSuppressionPage = 10000;
inline constexpr size_t kAdminDefaultSuppressionPage = 1000;
// Query parameters one request may carry.
inline constexpr size_t kAdminMaxQueryParams = 8;
// Destinations in one GET /destinations?all=1 answer, by default and at most.
inline constexpr size_t kAdminDefaultDestinations = 100;
inline constexpr size_t kAdminMaxDestinations = 10000;
// How long GET /destinations and GET /queue wait for the shards' fresh listings
// (DestinationStates::Refresh); an idle shard answers within its 100 ms tick.
inline constexpr absl::Duration kAdminDestinationsWait = absl::Seconds(1);
// Entries of failed/ looked at to find a refused job, and octets of its
// .error answered.
inline constexpr size_t kAdminMaxFailedScan = 10000;
inline constexpr size_t kAdminMaxRefusalText = 4096;

// AdminRequest - what a request asks for, after ParseAdminRequest.
struct AdminRequest {
  enum class Action {
    kHealth, kDestinations, kListJobs, kShowJob, kPause, kResume, kCancel,
    kListSuppressions, kCheckSuppression, kAddSuppressions, kRemoveSuppression,
    kSuspend, kUnsuspend, kRetryDomain, kRetryJob,
    kQueueSummary,
  };
  Action action = Action::kHealth;
  std::string job_id;  // for kShowJob, kPause, kResume, kCancel, kRetryJob
  std::string domain;  // for kSuspend, kUnsuspend, kRetryDomain: lower case
  // The query of a suppressions request, percent-decoded, each name one the
  // action takes and given at most once.
  std::vector<std::pair<std::string, std::string>> params;
  // Param - the value of `name`, or nullopt.
  std::optional<std::string_view> Param(std::string_view name) const {
    for (const auto& [n, v] : params) {
      if (n == name) return v;
    }
    return std::nullopt;
  }
};

// ParseAdminRequest - what a request (as http::Server parsed it) asks for.
// Pure: no I/O. Errors, as AdminHttpStatus maps them:
//   InvalidArgument (400): a request target that is not a plain path (query,
//     '#', '%', absolute form, bytes outside printable ASCII), a body announced
//     (Content-Length other than 0, Transfer-Encoding), a job id that is not
//     [A-Za-z0-9._-]{1,128};
//   NotFound (404): no such endpoint;
//   Unimplemented (405): the endpoint exists but not with that method; the
//     Allow value is the status's payload (AdminAllow).
absl::StatusOr<AdminRequest> ParseAdminRequest(const http::Request& request);

// AdminDomain - a path's DOMAIN (kSuspend..kRetryDomain), lower case;
// InvalidArgument "domain: ..." (engine/destination_control.h NormalizeDomain).
absl::StatusOr<std::string> AdminDomain(std::string_view domain);
// IsAdminSuspendTarget - POST /destinations/D/suspend: the one body besides
// POST /suppressions'.
bool IsAdminSuspendTarget(std::string_view method, std::string_view target);

// AdminSuspendBody - what a POST /destinations/D/suspend body asks for: an
// empty body, or {"for": "2h" (a duration, engine/config.h ParseDuration; 0 or
// absent: kDefaultSuspension), "reason": "..."}. InvalidArgument naming the
// field; other fields are refused.
struct AdminSuspendBody {
  absl::Duration duration = absl::ZeroDuration();
  std::string reason;
};
absl::StatusOr<AdminSuspendBody> ParseAdminSuspendBody(std::string_view body);

// AdminSuspensionJson - {"destination","suspended":true,"suspended_until",
// "suspended_since","suspension_reason","suspended_by"}.
std::string AdminSuspensionJson(const Suspension& s);

// AdminAllow - the Allow header value a 405 status carries ("" for others).
std::string AdminAllow(const absl::Status& status);

// IsAdminJobId - true when `id` matches [A-Za-z0-9._-]{1,kAdminMaxJobId}.
bool IsAdminJobId(std::string_view id);

// AdminHttpStatus - the HTTP status for a failed request's Status:
// InvalidArgument 400, NotFound 404, Unimplemented 405, FailedPrecondition 409,
// ResourceExhausted 431 (no longer made here: kept for callers), anything else 500.
int AdminHttpStatus(const absl::Status& status);

// AdminJobJson - the JSON object for one job (see DESCRIPTION).
std::string AdminJobJson(const queue::JobRecord& job, const queue::JobProgress& progress);

// AdminJobReading - what the job object says beyond the queue's record and
// counters: the rate sampled (job_rates.h), the rejected lines counted, and
// the time it is read at (a job's send_after is compared with it).
struct AdminJobReading {
  absl::Time now = absl::InfinitePast();
  std::optional<double> rate;
  std::optional<uint64_t> rejected;
};
std::string AdminJobJson(const queue::JobRecord& job, const queue::JobProgress& progress,
                         const AdminJobReading& reading);

// AdminRefusedJobJson - the object for a job refused whole: `file` its name
// in failed/, `error` its .error's text (at most kAdminMaxRefusalText).
std::string AdminRefusedJobJson(std::string_view id, std::string_view file,
                                std::string_view error);

// AdminSuppressionJson - the JSON object for one suppression entry.
std::string AdminSuppressionJson(const queue::Suppression& entry);

// ParseAdminQuery - "a=1&b=x%40y" as name/value pairs, percent-decoded ('+'
// stays a plus). InvalidArgument for a malformed escape, an empty name, more
// than kAdminMaxQueryParams, or a name given twice.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseAdminQuery(
    std::string_view query);

// AdminSuppressionBatch - what a POST /suppressions body holds: the entries
// that could be read (not yet normalised: the list does that), and the index
// and reason of each that could not; `batch` is false for a single entry.
struct AdminSuppressionBatch {
  bool batch = false;
  std::vector<queue::Suppression> entries;
  std::vector<size_t> entry_index;  // entries[i] is the body's entry_index[i]
  std::vector<std::pair<size_t, std::string>> errors;
};

// ParseAdminSuppressions - a POST /suppressions body (DESCRIPTION), at `now`.
// InvalidArgument when the body is not JSON, not an object, or a batch of
// more than kAdminMaxSuppressionBatch; a bad entry is listed in errors.
absl::StatusOr<AdminSuppressionBatch> ParseAdminSuppressions(std::string_view body,
                                                             absl::Time now);

// DestinationEntry - one destination as a shard publishes it for
// GET /destinations?all=1: its JSON object, and what it is sorted and chosen by.
struct DestinationEntry {
  uint64_t queued = 0;     // recipients in the shard's hands: waiting and in flight
  uint64_t in_flight = 0;  // in a transaction now
  bool troubled = false;   // backed off, suspended, or its last reply a deferral
  std::string json;
};

// DestinationStates - what GET /destinations answers: each shard publishes its
// destinations' entries (JSON objects joined by commas) when asked, the admin
// thread reads them all.
//
// Published on demand, not on a timer: a shard's listing is a walk over every
// destination it has seen, and with tens of thousands of domains a walk once a
// second cost 2% of a busy shard (bench/RESULTS.md), for answers nobody read. A
// reader calls Refresh(): it raises the ticket, each running shard sees it at its
// next loop turn (within kTick when idle) and publishes, and Refresh returns when
// every attached shard has answered or after `wait`, with what is there.
class DestinationStates {
 public:
  explicit DestinationStates(size_t shards = 1)
      : entries_(std::max<size_t>(shards, 1)),
        all_(std::max<size_t>(shards, 1)),
        answered_(std::max<size_t>(shards, 1), 0),
        attached_(std::max<size_t>(shards, 1), false) {}
  // Shard side. Attach when its loop starts and Detach when it ends: a shard
  // that is not running holds no reader up.
  void Attach(size_t shard);
  void Detach(size_t shard);
  // Asked - the newest ticket; a shard that has not answered it publishes
  // (Publish, PublishAll) and then calls Answered with it. One atomic load: read
  // every loop turn.
  uint64_t Asked() const { return asked_.load(std::memory_order_acquire); }
  void Answered(size_t shard, uint64_t ticket);
  // Reader side: fresh listings from every running shard, waiting at most
  // `wait`. False when a shard did not answer in time (its last listing stays).
  bool Refresh(absl::Duration wait);
  void Publish(std::string entries, size_t shard = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    entries_[shard] = std::move(entries);
  }
  // SetControl - before the admin API starts: its suspended domains are
  // listed too (AdminSuspensionJson), each as a destination of its own.
  void SetControl(const DestinationControl* control) { control_ = control; }
  // PublishAll - every destination of `shard` (GET /destinations?all=1).
  void PublishAll(std::vector<DestinationEntry> entries, size_t shard = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    all_[shard] = std::move(entries);
  }
  // AllJson - the busiest `limit` destinations of every shard, by queued;
  // with `only_busy`, only those with something queued or troubled.
  std::string AllJson(size_t limit, bool only_busy) const;
  // InFlight - recipients in a transaction now, over every shard.
  uint64_t InFlight() const;
  std::string Json() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string json = "{\"destinations\":[";
    bool first = true;
    for (const std::string& e : entries_) {
      if (e.empty()) continue;
      if (!first) json += ",";
      first = false;
      json += e;
    }
    if (control_ != nullptr) {
      for (const auto& [domain, s] : *control_->Snapshot()) {
        if (!first) json += ",";
        first = false;
        json += AdminSuspensionJson(s);
      }
    }
    json += "]}\n";
    return json;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable answered_cv_;
  std::atomic<uint64_t> asked_{0};
  std::vector<std::string> entries_;
  const DestinationControl* control_ = nullptr;
  std::vector<std::vector<DestinationEntry>> all_;
  std::vector<uint64_t> answered_;  // per shard, the ticket its listings answer
  std::vector<bool> attached_;
};

class AdminServer {
 public:
  // Create - bind and listen on `listen` ("HOST:PORT", an IP literal);
  // requests wait for Start. `queue` and `ready` must outlive the server.
  static absl::StatusOr<std::unique_ptr<AdminServer>> Create(
      std::string_view listen, queue::Queue* queue, ReadyJobs* ready,
      int max_connections = kAdminMaxConnections, absl::Duration request_timeout = kAdminTimeout);
  ~AdminServer();  // stops and joins
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Before Start: where GET /destinations reads (none: an empty list).
  void SetDestinationStates(DestinationStates* states) { destinations_ = states; }
  // Before Start: the list /suppressions reads and writes (none: those
  // requests get 500 "no suppression list"). Must outlive the server.
  void SetSuppressionList(queue::SuppressionList* list) { suppressions_ = list; }
  // Before Start: suspensions and retries (/destinations/D/..., /jobs/ID/retry;
  // none: those requests get 500 "no destination control"). Must outlive the server.
  void SetDestinationControl(DestinationControl* control) { control_ = control; }
  // Before Start: the spool, whose accepted/ holds each job's rejects file and
  // failed/ the jobs refused whole (none: rejected is null, no refusals).
  void SetSpool(std::string spool_dir) { spool_dir_ = std::move(spool_dir); }
  // Start also starts the thread that samples every job's progress each
  // kJobRateInterval (job_rates.h); Stop joins it.
  void Start();
  void Stop();
  // The address bound, "127.0.0.1:9465" (the real port when 0 was asked for).
  const std::string& address() const { return http_->address(); }

  // Handle - the answer to one request. Public so that a test could drive it
  // without sockets.
  http::Response Handle(const http::Request& request);

 private:
  AdminServer(std::unique_ptr<http::Server> http, queue::Queue* queue, ReadyJobs* ready);
  absl::StatusOr<std::string> JobJson(std::string_view id);
  // The read side (admin_read.cc): a job's reading, a refused job, the queue.
  AdminJobReading ReadingOf(const queue::JobRecord& job, const queue::JobProgress& progress);
  std::optional<uint64_t> RejectedOf(const queue::JobRecord& job);
  absl::StatusOr<std::string> RefusedJobJson(std::string_view id);
  http::Response HandleQueueSummary(const AdminRequest& req);
  void SampleJobs();
  // HandleSuppressions - the /suppressions endpoints (admin_suppressions.cc).
  http::Response HandleSuppressions(const AdminRequest& req, std::string_view body);
  // HandleDestinationControl - suspend, unsuspend, retry (admin_destinations.cc).
  http::Response HandleDestinationControl(const AdminRequest& req, std::string_view body);

  std::unique_ptr<http::Server> http_;
  queue::Queue* queue_;
  ReadyJobs* ready_;
  DestinationStates* destinations_ = nullptr;
  queue::SuppressionList* suppressions_ = nullptr;
  DestinationControl* control_ = nullptr;
  std::string spool_dir_;
  JobRates rates_;
  // Rejected counts read from accepted/<job>.rejects.jsonl, by job number:
  // the file does not change once the job is accepted. At most
  // kJobRateMaxJobs entries (cleared when full).
  std::mutex rejected_mu_;
  std::unordered_map<uint32_t, uint64_t> rejected_;
  // One queue scan at a time: each is bounded, several at once would not be.
  std::mutex summary_mu_;
  std::mutex sampler_mu_;
  std::condition_variable sampler_cv_;
  bool sampler_stop_ = false;
  std::thread sampler_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_ADMIN_H_
