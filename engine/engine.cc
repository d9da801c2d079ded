// engine.cc - one delivery shard: queue -> routes or DNS -> SMTP connections -> outcomes
//
// Invariants this file relies on ("prepare for disaster"):
// - A recipient's queue entry is removed or rescheduled only after its outcome
//   line reached the delivery log: each loop turn's outcomes go to the
//   committer (engine/committer.h), which writes the log, then the queue, on its
//   own thread, one turn's unit at a time. A crash between the two repeats the
//   outcome on restart; it never loses one. A key stays in its job's `taken`
//   set until its unit is written, so it is never taken twice meanwhile.
// - A recipient taken from the queue is in exactly one place: waiting for its
//   domain's DNS plan, a destination's ready list, a connection's current
//   transaction, or finished. The window
//   counts them; nothing is taken beyond it.
// - A connection is freed (MaybeFree) only when no io_uring operation on it is
//   pending, and only at the end of handling a completion or a timeout: the
//   code before that may use it. Completions for a reused slot are dropped by
//   generation (base/slot_table.h).
#include "engine/engine.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/json.h"
#include "base/slot_table.h"
#include "base/status.h"
#include "dns/resolver.h"
#include "dns/router.h"
#include "dns/routes.h"
#include "engine/admin.h"
#include "engine/committer.h"
#include "engine/compose.h"
#include "engine/deadlines.h"
#include "engine/fd_budget.h"
#include "engine/intake.h"
#include "engine/reactor/ring.h"
#include "engine/ready_queue.h"
#include "engine/shaping.h"
#include "engine/retry.h"
#include "engine/smtp/client.h"
#include "engine/tls/tls.h"
#include "metrics/classify.h"
#include "metrics/delivery_log.h"
#include "metrics/exporter.h"
#include "metrics/metrics.h"
#include "queue/job.h"
#include "queue/queue.h"
#include "queue/spool.h"
#include "queue/template.h"

namespace volley::engine {
namespace {

enum Op : uint8_t {
  kOpConnect = 1,
  kOpSend,
  kOpRecv,
  kOpIntakeEvent,
  kOpDnsPoll,        // a resolver socket is ready: slot = its fd
  kOpDnsPollRemove,  // a cancelled DNS poll's own completion (nothing to do)
  kOpCommitDone,     // the committer finished a unit (its eventfd)
};

// What one read of a connection takes in. Servers' replies are short (a long
// EHLO reply is under 1 KiB) and a longer input just takes more reads, so this
// is small: it is most of what an idle connection costs (bench/RESULTS.md).
constexpr size_t kRecvBufferSize = 4 << 10;
// Recipients taken from one job per scan: small enough that jobs share the
// window fairly, large enough that a scan is worth its seek.
constexpr size_t kTakeBatch = 512;
// How long stopping waits for transactions under way before closing anyway.
constexpr absl::Duration kStopGrace = absl::Seconds(10);
constexpr absl::Duration kTick = absl::Milliseconds(100);
// A retry due before its recipient's deadline and taken less than this after
// its due time still gets its try when the deadline has passed meanwhile.
constexpr absl::Duration kLateRetryGrace = absl::Minutes(1);
// How long a host that failed before its session got going is passed over while
// the route has another: long enough not to hammer it, short enough that the
// preferred host takes the traffic back soon after it recovers.
constexpr absl::Duration kHostDownTime = absl::Minutes(1);
// Refills of the window from the queue are at least this far apart: each costs
// a RocksDB seek per job.
constexpr absl::Duration kRefillInterval = absl::Milliseconds(10);
// After socket() ran out of descriptors, how long no connection opens beyond
// those open then (unless some close): long enough not to retry per turn.
constexpr absl::Duration kFdShortTime = absl::Seconds(1);
// How long a recipient stopped by volleyd's own bound (the resolver's queue
// full) waits before it is taken again: long enough for the queue to drain.
constexpr absl::Duration kPostponeDelay = absl::Seconds(15);
// Another connection opens only while more transactions than this per
// connection (open or opening) are waiting: a new session costs a handshake of
// four or five round trips (TCP, greeting, EHLO, STARTTLS, EHLO), so fewer than
// that are taken as soon by the sessions there are.
constexpr size_t kWaitingPerConnection = 8;
// While destinations wait for the connection budget, idle connections of
// destinations without work are looked for at most this often.
constexpr absl::Duration kIdleReclaimInterval = absl::Milliseconds(100);
// The longest wait between refills while the queue keeps failing them.
constexpr absl::Duration kRefillRetryMax = absl::Seconds(5);
// How often domains whose DNS plan expired are forgotten.
constexpr absl::Duration kDomainSweepInterval = absl::Seconds(10);


// PartitionScan - where the shard is in one partition of one job (queue.h).
struct PartitionScan {
  uint16_t partition = 0;
  std::string cursor;  // last key taken; the next scan starts after it
  // Nothing of it is due before then (it is not scanned until then).
  absl::Time idle_until = absl::InfinitePast();
  // No recipient of the job is left in it (nor taken from it): never scanned again.
  bool empty = false;
  size_t in_flight = 0;  // taken from it and not finished
};

struct Job {
  queue::JobRecord record;
  queue::JobHeader header;
  std::unique_ptr<queue::Template> tpl;
  // The partitions this shard owns, scanned in turn (next_scan first) so that,
  // when the window is short, destinations of one job share it.
  std::vector<PartitionScan> scans;
  size_t next_scan = 0;
  // The message (and MAIL FROM) is the same for every recipient: recipients of
  // one domain may share a transaction.
  bool shared_message = false;
  // What Composer worked out for the job: added fields, VERP, DKIM signers.
  std::unique_ptr<JobPlan> plan;
  size_t in_flight = 0;
  // Keys taken from the queue whose outcome is not yet committed: in a ready
  // list, in a transaction, or finished in the batch not yet written. A scan
  // from the job's start (resume, cancel) passes over them, so a recipient is
  // never taken twice, whatever the cursor says.
  absl::flat_hash_set<std::string> taken;
};

struct Destination;

struct Work {
  queue::QueuedRecipient entry;
  queue::Recipient rcpt;
  Job* job = nullptr;
  PartitionScan* scan = nullptr;  // of job, the partition it was taken from
  // The destination's retry policy, and when the recipient expires under it:
  // the job's queued_at + max_age, or the job's expires if sooner.
  const RetryConfig* retry = nullptr;
  absl::Time deadline = absl::InfiniteFuture();
};

absl::Time ExpiryOf(const Job& job, const RetryConfig& retry) {
  const absl::Time by_age = job.record.queued_at + retry.max_age;
  return job.header.expires ? std::min(by_age, *job.header.expires) : by_age;
}

struct Conn {
  uint32_t slot = 0;
  int fd = -1;
  Destination* dest = nullptr;
  std::unique_ptr<smtp::Client> client;
  std::unique_ptr<char[]> recv_buffer;
  std::string send_buffer;     // bytes handed to the kernel, owned until the send completes
  size_t send_offset = 0;
  int pending_ops = 0;
  bool send_in_flight = false;
  bool session_ready = false;
  bool closing = false;        // shut down; freed when pending_ops reaches 0
  std::vector<Work*> current;  // the transaction under way, one per recipient
  int messages = 0;
  absl::Time deadline = absl::InfiniteFuture();
  absl::Time transaction_started;  // for the transaction duration histogram
  // Dispatch took a message token for the transaction AssignNext starts.
  bool token_taken = false;
  // After STARTTLS: every byte goes through the TLS session; `plaintext` is the
  // scratch buffer for what it decrypts.
  std::unique_ptr<tls::Session> tls;
  std::string plaintext;
  std::string tls_version;  // for the delivery log, once the handshake is done
  std::string tls_cipher;
  // The handshake failed under tls = "opportunistic": the destination is retried in
  // plaintext at once, so its waiting work is not deferred for this session's end.
  bool tls_fell_back = false;
  // The route the connection was opened on (a DNS route may be replaced by a
  // fresher one meanwhile) and the host of it.
  std::shared_ptr<const dns::Route> route;
  size_t host = 0;
  int source = -1;  // the egress source bound to (Config::sources), or none
};

struct Destination {
  std::shared_ptr<const dns::Route> route;
  // Per host of the route: a host that failed before its session got going is
  // passed over until then, so new connections go to the next one.
  std::vector<absl::Time> host_down_until;
  const DestinationPolicy* policy = nullptr;
  // Until then, STARTTLS is not tried (a handshake failed under "opportunistic").
  absl::Time plaintext_until = absl::InfinitePast();
  ReadyQueue<Work*> ready;
  std::vector<Conn*> idle;
  int connections = 0;         // open or opening
  int sessions_starting = 0;   // not yet through EHLO
  // The policy's max_message_rate and max_connection_rate (engine/shaping.h), and
  // whether work is waiting for either (counted once per wait in the metrics).
  TokenBucket message_tokens;
  TokenBucket connection_tokens;
  // Transactions started lately, and (backed off without a configured
  // max_message_rate) the rate measured when backoff began, or as soon as there
  // was a measure: what its levels halve. 0: not measured (no rate limit yet).
  RateMeter messages_started;
  double backoff_base_rate = 0;
  std::string pool;  // its key in destinations_, for volleyd's log
  bool waiting_for_message_token = false;
  bool waiting_for_connection_token = false;
  // In Shard::budget_waiters_: it may open another connection, but the shard's
  // connection budget is spent.
  bool waiting_for_budget = false;
  bool active = false;  // in Shard::active_
  // Adaptive backoff (docs/config.md): each level halves the connections (and a
  // configured message rate); a level is undone per period without another such
  // reply. A suspension defers everything until it ends.
  int backoff_level = 0;
  absl::Duration backoff_period;
  absl::Time backoff_step_at = absl::InfinitePast();  // the next step down
  absl::Time backoff_raised = absl::InfinitePast();
  absl::Time suspended_until = absl::InfinitePast();
  std::string backoff_reason;  // the reply behind the last step or suspension
  // Its per-destination metrics (volley_destination_deliveries_total).
  metrics::DestinationCounters* counters = nullptr;
  // Reached by DNS: a site whose domains other shards may have too (SiteShares),
  // and how many shards share its limits now (its pool takes 1/sharing).
  bool by_dns = false;
  int sharing = 1;
  // Smooth weighted round robin over the policy's egress sources: each pick adds
  // every source's weight to its credit and takes the largest, which then pays
  // the total back. Sources are taken in proportion, evenly interleaved.
  std::vector<int> source_credit;
};

// At most 1/16 of the connections, and of a configured message rate.
constexpr int kMaxBackoffLevel = 4;

int MaxConnections(const Destination& d) {
  return std::max(1, (d.policy->max_connections / d.sharing) >> d.backoff_level);
}

// MessageRate - d's message rate now: the configured one, or under backoff the
// rate measured when it began; halved per level. 0: no limit.
// A configured rate is the site's: a shard's pool takes its share. A measured
// one (backoff_base_rate) is this pool's own already.
double MessageRate(const Destination& d) {
  const double configured = d.policy->max_message_rate.per_second / d.sharing;
  if (d.backoff_level == 0) return configured;
  const double base = d.policy->max_message_rate.limited() ? configured : d.backoff_base_rate;
  return base / static_cast<double>(1 << d.backoff_level);
}

// MeasuredBase - what backoff halves for d when it has no configured rate: the
// rate it has been sending at (at least one message a second, so that it still
// gets through), or 0 while there is no measure yet.
double MeasuredBase(const Destination& d) {
  const double measured = d.messages_started.PerSecond();
  return measured > 0 ? std::max(1.0, measured) : 0;
}

TokenBucket ConnectionBucket(const Destination& d) {
  Rate r;
  r.per_second = d.policy->max_connection_rate.per_second / d.sharing;
  return TokenBucket(r);
}

TokenBucket MessageBucket(const Destination& d) {
  Rate r;
  r.per_second = MessageRate(d);
  return TokenBucket(r);
}

// JobBoard - which shards have finished their share of each job: the last one
// to finish marks the job done. Touched once per job per shard, not per message.
class JobBoard {
 public:
  explicit JobBoard(size_t shards) : shards_(shards) {}
  // ShardFinished - true for the call that completes the job (once per job,
  // however often a shard reports it: a control command may reload a job).
  bool ShardFinished(uint32_t job_no, size_t shard) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<bool>& done = finished_[job_no];
    if (done.empty()) done.resize(shards_, false);
    if (done[shard]) return false;
    done[shard] = true;
    if (!std::all_of(done.begin(), done.end(), [](bool b) { return b; })) return false;
    // Done: the job is marked so in the queue next, and no shard loads it again.
    finished_.erase(job_no);
    return true;
  }

 private:
  const size_t shards_;
  std::mutex mu_;
  std::map<uint32_t, std::vector<bool>> finished_;
};

// SiteShares - which shards have a pool for each site reached by DNS. A site's
// domains hash to partitions of their own (engine.cc's partitioner), so several
// shards may each open a pool for one site; each of those pools then takes 1/k
// of the site's limits, k the shards sharing it, so that together they keep
// them. Joined when a shard makes the pool, reported once a second after that:
// one lock per shard per second and per new pool, never per message.
class SiteShares {
 public:
  explicit SiteShares(size_t shards) : shards_(shards), reported_(shards) {}
  // Join - `shard` has a pool for `key` now; the shards sharing it.
  int Join(const std::string& key, size_t shard) {
    std::lock_guard<std::mutex> lock(mu_);
    reported_[shard].insert(key);
    return Mark(key, shard);
  }
  // Report - `active` are the keys of `shard`'s pools with work or connections
  // now (any it reported before and not now has left); the sharing count of each.
  std::vector<int> Report(size_t shard, const std::vector<std::string>& active) {
    std::lock_guard<std::mutex> lock(mu_);
    absl::flat_hash_set<std::string> now(active.begin(), active.end());
    for (const std::string& key : reported_[shard]) {
      if (now.contains(key)) continue;
      auto it = sharing_.find(key);
      if (it == sharing_.end()) continue;
      it->second[shard] = false;
      if (std::none_of(it->second.begin(), it->second.end(), [](bool b) { return b; })) {
        sharing_.erase(it);
      }
    }
    std::vector<int> counts;
    counts.reserve(active.size());
    for (const std::string& key : active) counts.push_back(Mark(key, shard));
    reported_[shard] = std::move(now);
    return counts;
  }

 private:
  int Mark(const std::string& key, size_t shard) {
    std::vector<bool>& who = sharing_[key];
    if (who.empty()) who.resize(shards_, false);
    who[shard] = true;
    return static_cast<int>(std::count(who.begin(), who.end(), true));
  }
  const size_t shards_;
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::vector<bool>> sharing_;  // by pool key
  std::vector<absl::flat_hash_set<std::string>> reported_;       // by shard
};

// ShardPlace - which shard this is, and what it shares with the others.
struct ShardPlace {
  size_t index = 0;
  size_t count = 1;
  Committer* committer = nullptr;  // one lane per shard
  JobBoard* board = nullptr;
  SiteShares* sites = nullptr;  // null with one shard
  size_t window = 1;  // this shard's share of [delivery] window
  // This shard's share of the connection budget (engine/fd_budget.h).
  size_t connection_budget = 1;
  // Set by a second SIGTERM or SIGINT: stop at once, without the grace period.
  const std::atomic<bool>* stop_now = nullptr;
};

class Shard {
 public:
  Shard(const Config& config, ShardPlace place, queue::Queue* queue,
        const dns::StaticRoutes* routes, ReadyJobs* ready_jobs, const std::atomic<bool>* stop,
        metrics::ShardMetrics* metrics, const metrics::Classifier* classifier,
        const Credentials* credentials)
      : config_(config),
        place_(place),
        queue_(queue),
        classifier_(classifier),
        routes_(routes),
        ready_jobs_(ready_jobs),
        stop_(stop),
        metrics_(metrics),
        rng_(std::random_device{}()),
        committer_(place.committer),
        composer_(*credentials) {
    for (const auto& [name, policy] : config_.destinations) policies_.emplace(name, &policy);
    for (uint16_t p = 0; p < queue::kPartitions; ++p) {
      if (p % place_.count == place_.index) owned_.push_back(p);
    }
    for (const EgressSource& e : config_.sources) {
      // The config checked the literal already.
      SourceAddress a;
      auto* v4 = reinterpret_cast<sockaddr_in*>(&a.addr);
      auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.addr);
      if (::inet_pton(AF_INET, e.address.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        a.len = sizeof *v4;
      } else if (::inet_pton(AF_INET6, e.address.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        a.len = sizeof *v6;
      }
      source_addresses_.push_back(a);
    }
  }

  absl::Status Run();

 private:
  absl::Status LoadJob(const queue::JobRecord& record);
  // WithdrawReady - a paused or cancelled job's recipients waiting in ready
  // lists go back to the queue untouched (paused) or out of it (cancelled);
  // those in a transaction already under way finish it.
  void WithdrawReady(Job* job);
  absl::Status Refill(absl::Time now);
  // RefillOrBackOff - Refill; a failure other than corruption is logged (once
  // per episode) and retried later with backoff instead of stopping the shard.
  absl::Status RefillOrBackOff();
  absl::StatusOr<size_t> TakeFromJob(Job* job, PartitionScan* scan, size_t want, absl::Time now);
  // ScanIdle - nothing was taken from `scan` and nothing of it is under way:
  // find when it is due next, or that it is empty.
  absl::Status ScanIdle(Job* job, PartitionScan* scan);
  // Dispatch - every active destination (active_): start transactions on idle
  // connections, open connections, step backoff down.
  void Dispatch(absl::Time now);
  void DispatchOne(Destination* d, absl::Time now);
  // Activate - d has work waiting or a backoff to step down: Dispatch visits it
  // until it has neither.
  void Activate(Destination* d) {
    if (d->active) return;
    d->active = true;
    active_.push_back(d);
  }
  // ReclaimIdleConnections - destinations wait for the budget: idle connections
  // of destinations without work close.
  void ReclaimIdleConnections();
  // QuitIdle - d's idle connections say goodbye (QUIT) and close.
  void QuitIdle(Destination* d);
  // The connection budget (engine/fd_budget.h): how many connections the shard
  // may have open now; lowered for a while after socket() ran out of
  // descriptors all the same.
  size_t ConnectionBudgetNow() const {
    return now_ < fd_short_until_ ? std::min(place_.connection_budget, fd_short_cap_)
                                  : place_.connection_budget;
  }
  bool BudgetSpent() const { return open_conns_ >= ConnectionBudgetNow(); }
  // WantsConnection - d has transactions nobody is about to take, room under
  // its connection limit, and nothing holding it back.
  bool WantsConnection(const Destination& d, absl::Time now) const;
  // WaitForBudget - d may open another connection but the budget is spent: it
  // waits its turn (first come, first served, one connection per turn).
  // again: it was served and still wants more (not counted as a new wait).
  void WaitForBudget(Destination* d, bool again = false);
  // ServeBudgetWaiters - the budget freed since the last turn goes to the
  // destinations waiting for it, in order.
  void ServeBudgetWaiters(absl::Time now);
  // OpenConnection - kNoDescriptor: socket() ran out of file descriptors; d
  // waits for the budget, nothing is deferred.
  enum class Opened : uint8_t { kYes, kFailed, kNoDescriptor };
  Opened OpenConnection(Destination* d, absl::Time now);
  size_t ChooseHost(const Destination& d, absl::Time now);
  void OnCompletion(uint64_t tag, int result);
  void Drain(Conn* c);
  void AssignNext(Conn* c);
  void PushReady(Destination* d, Work* w, bool front);
  void FlushOutput(Conn* c);
  void OnReceived(Conn* c, std::string_view bytes);
  void StartTls(Conn* c);
  void ContinueHandshake(Conn* c);
  const DestinationPolicy& PolicyFor(std::string_view domain, std::string_view route_name,
                                     std::string* name) const;
  // Route - a recipient just taken goes to its destination: at once by a static
  // route, or by DNS when its domain has none (RouteByDns).
  void Route(Work* w, absl::Time now);
  void RouteByDns(Work* w, const std::string& domain, absl::Time now);
  void OnPlan(const std::string& domain);
  // Admit - `w`'s retry policy and deadline by its destination, then its ready
  // list; or expired untried when taken past its deadline.
  void Admit(Work* w, std::string_view domain, const std::shared_ptr<const dns::Route>& route,
             bool by_dns, absl::Time now);
  // ReportSites - once a second: this shard's DNS pools with work or connections
  // to SiteShares, and each pool's share of its site's limits from the answer.
  void ReportSites();
  void SetSharing(Destination* d, int sharing);
  // MeasureBackoffRates - once a second: a destination backed off without a
  // configured rate before its rate was measured gets its limit once it is.
  void MeasureBackoffRates();
  // ExpiresUntried - sets w's retry policy and deadline; true when it was taken
  // past the deadline and gets no try (it has been expired).
  bool ExpiresUntried(Work* w, const DestinationPolicy& policy, absl::Time now);
  // The resolver's sockets, polled through the ring (dns/resolver.h, Watch).
  void WatchDnsSocket(int fd, bool readable, bool writable);
  void OnDnsPoll(uint64_t tag, int result);
  // SweepDomains - forget domains whose plan expired and that nobody waits for.
  void SweepDomains(absl::Time now);
  static const dns::Destination& HostOf(const Conn* c) { return c->route->hosts[c->host]; }
  void SetDeadline(Conn* c, absl::Time now);
  // SetConnDeadline - c's deadline, in the connection and in deadlines_.
  void SetConnDeadline(Conn* c, absl::Time at) {
    c->deadline = at;
    deadlines_.Set(c->slot, at);
  }
  // Kick - after acting on a connection outside Drain: send what the client
  // wrote and start the clock on the reply it now waits for.
  void Kick(Conn* c) {
    FlushOutput(c);
    SetDeadline(c, now_);
  }
  // PickSource - the egress source (index into config_.sources) of d's next
  // connection to an address of `family`; -1 when d's policy names none, -2
  // when none of those it names has that family.
  int PickSource(Destination* d, int family);
  // MarkHostDown - c's host failed before its session got going: pass it over
  // for kHostDownTime.
  void MarkHostDown(Destination* d, const Conn& c);
  // WaitForToken - d has work but no token under its message (or connection)
  // rate: the loop wakes when the next one is there.
  void WaitForToken(Destination* d, bool messages, absl::Time now);
  // Adaptive backoff ([[backoff]] rules over the reply's class).
  const BackoffRule* BackoffRuleFor(const smtp::Outcome& o) const;
  bool ApplyBackoffRule(Work* w, const smtp::Outcome& o, Destination* d, const Conn* c);
  void StepBackoff(Destination* d, int step, absl::Time now);
  void CloseConn(Conn* c);
  // CountReplies - the replies c's client parsed, into the metrics.
  void CountReplies(Conn* c);
  // PublishLoopMetrics - at the end of a loop turn: gauges, busy time, DNS counts,
  // and once a second the destinations' backoff states for the admin API.
  void PublishLoopMetrics(absl::Time turn_started);
  void PublishDestinationStates(absl::Time now);

 public:
  void SetDestinationStates(DestinationStates* states) { destination_states_ = states; }

 private:
  void MaybeFree(Conn* c);
  // FailDestination - defer everything waiting for `d`; `c` the connection whose
  // failure it was, when there was one.
  void FailDestination(Destination* d, const smtp::Outcome& why, const Conn* c = nullptr);
  // `c` is the connection the attempt was made on, when there was one.
  void Record(const Work* w, metrics::DeliveryStatus status, const smtp::Outcome& o,
              const Destination* d, uint32_t attempt, const Conn* c = nullptr);
  void Release(Work* w);
  // Finish - a final outcome (delivered, bounced, expired) of the attempt just made.
  void Finish(Work* w, queue::Final how, const smtp::Outcome& o, const Destination* d,
              const Conn* c = nullptr);
  // Defer - the attempt just made failed for now: retry later, or expire when it
  // was the try at the deadline.
  void Defer(Work* w, const smtp::Outcome& o, const Destination* d, const Conn* c = nullptr);
  // Expire - taken from the queue past its deadline, without an attempt.
  void Expire(Work* w);
  // Postpone - not tried because one of volleyd's own bounds stopped it (the
  // resolver's queue full): back to the queue for kPostponeDelay, logged as
  // deferred with the reason, and no attempt counted.
  void Postpone(Work* w, const smtp::Outcome& why);
  // Cancel - its job was cancelled before it was sent.
  void Cancel(Work* w);
  // Commit - hand this turn's outcomes to the committer (when it is free).
  absl::Status Commit();
  absl::Status CommitLast();
  // ForgetCommitted - after a batch is written, its keys leave Job::taken.
  void ForgetCommitted(const std::vector<std::pair<uint32_t, std::string>>& keys);
  void PostCommitRead();
  void OnCommitDone();
  void PostIntakeRead();
  void TakeReadyJobs();

  const Config& config_;
  const ShardPlace place_;
  std::vector<uint16_t> owned_;  // the queue partitions this shard scans
  queue::Queue* queue_;
  const metrics::Classifier* classifier_;  // the class of failure records
  const dns::StaticRoutes* routes_;
  ReadyJobs* ready_jobs_;
  const std::atomic<bool>* stop_;
  metrics::ShardMetrics* metrics_;
  // "other"'s counters, for outcomes without a destination; found on first use.
  metrics::DestinationCounters* other_counters_ = nullptr;
  std::mt19937_64 rng_;
  // The router's counts already added to metrics_ (they are copied as deltas).
  dns::Router::Stats dns_counted_;
  dns::Resolver::Stats resolver_counted_;

  std::map<uint32_t, std::unique_ptr<Job>> jobs_;  // by job number
  // Jobs this shard finished last, to be marked done in the queue.
  std::deque<queue::JobRecord> jobs_to_mark_done_;
  // A refill failed (a queue read or write: no descriptor, EIO): the next one
  // waits until then, the wait doubling per failure up to kRefillRetryMax.
  absl::Time refill_retry_at_ = absl::InfinitePast();
  absl::Duration refill_retry_wait_ = absl::ZeroDuration();
  uint32_t refill_from_ = 0;  // the job number the next refill starts at
  // The last refill stopped with recipients possibly still due (the window
  // filled, or a scan hit its batch size): refill again soon, not at the tick.
  bool more_due_ = false;
  // Keyed by the route's "HOST:PORT" and the policy's name: domains that share a
  // route and a policy share a pool.
  absl::flat_hash_map<std::string, std::unique_ptr<Destination>> destinations_;
  std::optional<tls::Context> tls_context_;  // made in Run(); one per shard
  // config_.destinations by name (looked up for every recipient taken).
  absl::flat_hash_map<std::string, const DestinationPolicy*> policies_;
  // config_.sources' addresses, parsed once (bound with port 0).
  struct SourceAddress {
    sockaddr_storage addr{};
    socklen_t len = 0;
  };
  std::vector<SourceAddress> source_addresses_;
  base::SlotTable<Conn> conns_;
  // The open connections' deadlines, by slot (engine/deadlines.h).
  DeadlineHeap deadlines_;
  // Declared after conns_ so that it is destroyed first: tearing the ring down
  // cancels the operations still pointing into connections' buffers.
  Ring ring_;
  // Made in Run(). Declared after the ring (destroyed before it, closing their
  // sockets while the ring still holds their polls), the router after the
  // resolver it uses.
  std::unique_ptr<dns::Resolver> resolver_;
  std::unique_ptr<dns::Router> router_;
  struct DnsWatch {
    unsigned events = 0;      // POLLIN, POLLOUT
    uint16_t generation = 0;  // of the poll submitted, in its tag
    bool armed = false;       // a poll is submitted and not yet completed
  };
  absl::flat_hash_map<int, DnsWatch> dns_watches_;  // by fd
  uint16_t dns_generation_ = 0;
  // Domains routed by DNS: the plan in use until it expires, and the recipients
  // waiting for one. Bounded by the window (only domains of recipients taken
  // come in) and swept of expired entries.
  struct DomainRoute {
    absl::Time valid_until = absl::InfinitePast();
    bool resolving = false;
    std::shared_ptr<const dns::Route> route;  // or:
    std::optional<dns::MxVerdict> verdict;
    std::vector<Work*> waiting;
  };
  absl::flat_hash_map<std::string, DomainRoute> dns_domains_;
  absl::Time last_sweep_ = absl::InfinitePast();
  // The earliest time a destination waiting for a rate token gets one.
  absl::Time shaping_wake_ = absl::InfiniteFuture();
  DestinationStates* destination_states_ = nullptr;
  absl::Time last_states_ = absl::InfinitePast();
  size_t in_flight_ = 0;
  size_t open_conns_ = 0;
  // Destinations waiting for the connection budget, in the order they came
  // (each once: Destination::waiting_for_budget). Destinations live as long as
  // the shard, so the pointers stay valid.
  std::deque<Destination*> budget_waiters_;
  // Destinations Dispatch visits (Destination::active): those with work waiting
  // or a backoff level to step down.
  std::vector<Destination*> active_;
  absl::Time last_idle_reclaim_ = absl::InfinitePast();
  // While destinations wait for the budget, a destination keeps at most this
  // many connections (the budget over the destinations with work): a big
  // destination gives connections back as its transactions end, so small ones
  // are not starved by it.
  size_t fair_share_ = SIZE_MAX;
  // After socket() failed with EMFILE or ENFILE: until then the budget is the
  // connections open at that moment.
  absl::Time fd_short_until_ = absl::InfinitePast();
  size_t fd_short_cap_ = 0;
  std::unique_ptr<queue::Queue::OutcomeBatch> batch_;
  uint64_t intake_counter_ = 0;
  bool stopping_ = false;
  // Writes each turn's outcomes, log then queue, off the loop (engine/committer.h);
  // shared by the shards, a lane each.
  Committer* committer_;
  Composer composer_;  // renders and signs; this shard's own signers
  std::string log_buffer_;  // this turn's delivery-log records, formatted
  uint64_t commit_counter_ = 0;
  // A commit failed for good (not a full disk): the loop ends with it.
  absl::Status fatal_;
  // Keys (job number, key) let go of since the last committed batch: see Job::taken.
  std::vector<std::pair<uint32_t, std::string>> uncommitted_;
  absl::Time now_;
};

absl::Status Shard::LoadJob(const queue::JobRecord& record) {
  if (auto it = jobs_.find(record.job_no); it != jobs_.end()) {
    // Known already: a control command (pause, resume, cancel) changed it.
    Job* job = it->second.get();
    const char* change = nullptr;
    if (record.state == queue::JobState::kCancelled &&
        job->record.state != queue::JobState::kCancelled) {
      change = "cancelled: its queued recipients are being removed";
    } else if (record.paused != job->record.paused) {
      change = record.paused ? "paused" : "resumed";
    }
    // A resumed or cancelled job is scanned from its start again: what was
    // passed over meanwhile may be due.
    if (change != nullptr) {
      for (PartitionScan& scan : job->scans) {
        scan.cursor.clear();
        scan.idle_until = absl::InfinitePast();
      }
    }
    job->record.paused = record.paused;
    job->record.state = record.state;
    if (change != nullptr) {
      std::fprintf(stderr, "volleyd: job \"%s\" %s\n", record.id.c_str(), change);
      if (record.paused || record.state == queue::JobState::kCancelled) WithdrawReady(job);
    }
    return absl::OkStatus();
  }
  if (record.state != queue::JobState::kReady && record.state != queue::JobState::kCancelled) {
    return absl::OkStatus();  // still loading, or finished: nothing to send
  }
  auto job = std::make_unique<Job>();
  job->record = record;
  auto header = queue::ParseJobHeader(record.header_json, queue::JobLimits{});
  if (!header.ok()) {
    return absl::DataLossError(absl::StrCat("job \"", record.id,
                                            "\": stored header no longer parses: ",
                                            header.status().message()));
  }
  job->header = *std::move(header);
  auto tpl = queue::Template::Compile(job->header.message);
  if (!tpl.ok()) {
    return absl::DataLossError(absl::StrCat("job \"", record.id, "\": ", tpl.status().message()));
  }
  job->tpl = std::make_unique<queue::Template>(*std::move(tpl));
  job->plan = composer_.Plan(job->header, *job->tpl, record.job_no);
  job->shared_message = job->tpl->variables().empty() &&
                        job->header.return_path.find("{{") == std::string::npos &&
                        !job->plan->per_recipient();
  job->scans.resize(owned_.size());
  for (size_t i = 0; i < owned_.size(); ++i) job->scans[i].partition = owned_[i];
  jobs_[record.job_no] = std::move(job);
  return absl::OkStatus();
}

smtp::Outcome MakeOutcome(smtp::Outcome::Kind kind, int code, std::string enhanced,
                          std::string text) {
  smtp::Outcome o;
  o.kind = kind;
  o.code = code;
  o.enhanced = std::move(enhanced);
  o.text = std::move(text);
  o.stage = smtp::Stage::kConnect;
  return o;
}

// FailureOf - why a session ended before it was ready, as the metrics name it.
metrics::ConnFailure FailureOf(const smtp::Outcome& why) {
  using F = metrics::ConnFailure;
  if (why.stage == smtp::Stage::kStartTls || absl::StartsWith(why.enhanced, "4.7.5") ||
      absl::StartsWith(why.enhanced, "4.7.10")) {
    return F::kTls;
  }
  if (absl::StrContains(why.text, "timed out")) return F::kTimeout;
  if (why.stage == smtp::Stage::kConnect) return F::kConnect;
  if (absl::StrContains(why.text, "protocol error")) return F::kProtocol;
  if (absl::StrContains(why.text, "connection lost")) return F::kClosed;
  if (why.stage == smtp::Stage::kGreeting) return F::kGreeting;
  if (why.stage == smtp::Stage::kEhlo || why.stage == smtp::Stage::kHelo) return F::kEhlo;
  return F::kClosed;
}

void Shard::WithdrawReady(Job* job) {
  for (auto& [name, d] : destinations_) {
    for (Work* w : d->ready.TakeAll()) {
      if (w->job != job) {
        PushReady(d.get(), w, /*front=*/false);
      } else if (job->record.state == queue::JobState::kCancelled) {
        Cancel(w);
      } else {
        Release(w);  // still queued, at its key: taken again after the resume
      }
    }
  }
}


// TakeFromJob - up to `want` due recipients of `job` into the destinations'
// ready queues (or straight to their outcome: expired, no route). Returns how
// many the queue gave.
absl::StatusOr<size_t> Shard::TakeFromJob(Job* job, PartitionScan* scan, size_t want,
                                          absl::Time now) {
  std::vector<queue::QueuedRecipient> taken;
  RETURN_IF_ERROR(
      queue_->TakeDue(job->record.job_no, scan->partition, scan->cursor, now, want, &taken));
  for (auto& entry : taken) {
    scan->cursor = entry.key;
    if (!job->taken.insert(entry.key).second) continue;  // under way already
    auto rcpt = queue::DecodeRecipient(entry.recipient);
    if (!rcpt.ok()) {
      // Its address cannot be trusted, so nothing is sent: the entry is bounced
      // (the log names its job and line, which point into accepted/) instead
      // of being scanned again forever and holding its job open.
      std::fprintf(stderr, "volleyd: job \"%s\" line %u: corrupt queue entry (%s); bounced\n",
                   job->record.id.c_str(), entry.line,
                   std::string(rcpt.status().message()).c_str());
      queue::Recipient unknown;
      auto* w = new Work{std::move(entry), std::move(unknown), job, scan};
      ++job->in_flight;
      ++scan->in_flight;
      ++in_flight_;
      Finish(w, queue::Final::kBounced,
             MakeOutcome(smtp::Outcome::Kind::kPermanent, 0, "5.3.0",
                         absl::StrCat("queue entry corrupt: ", rcpt.status().message(),
                                      "; see line ", w->entry.line, " of the job file")),
             nullptr);
      continue;
    }
    auto* w = new Work{std::move(entry), *std::move(rcpt), job, scan};
    ++job->in_flight;
    ++scan->in_flight;
    ++in_flight_;
    if (job->record.state == queue::JobState::kCancelled) {
      Cancel(w);
      continue;
    }
    Route(w, now);
  }
  return taken.size();
}

void Shard::Route(Work* w, absl::Time now) {
  const std::string domain = absl::AsciiStrToLower(base::Sv(queue::DomainOf(w->rcpt.to)));
  if (const dns::Route* route = routes_->Find(domain)) {
    // Static routes live as long as the shard: a shared_ptr that owns nothing.
    Admit(w, domain, std::shared_ptr<const dns::Route>(std::shared_ptr<void>(), route),
          /*by_dns=*/false, now);
    return;
  }
  RouteByDns(w, domain, now);
}

void Shard::RouteByDns(Work* w, const std::string& domain, absl::Time now) {
  DomainRoute& known = dns_domains_[domain];
  if (!known.resolving && now < known.valid_until) {
    if (known.route) {
      Admit(w, domain, known.route, /*by_dns=*/true, now);
      return;
    }
    known.waiting.push_back(w);  // the verdict, applied by OnPlan's way
    OnPlan(domain);
    return;
  }
  known.waiting.push_back(w);
  if (known.resolving) return;
  known.resolving = true;
  // May answer at once from the cache (and call OnPlan before returning).
  router_->Plan(domain, [this, domain](dns::RoutePlan plan) {
    auto it = dns_domains_.find(domain);
    if (it == dns_domains_.end()) return;
    DomainRoute& d = it->second;
    d.resolving = false;
    // A plan is reused until its answers expire, and for a second at least, so
    // that a failing server is not asked again for every recipient. A local
    // verdict is not a plan (nothing was learnt about the domain): never reused.
    const bool local = plan.plan.verdict && plan.plan.verdict->local;
    d.valid_until =
        local ? absl::InfinitePast() : std::max(plan.valid_until, now_ + absl::Seconds(1));
    d.verdict = plan.plan.verdict;
    d.route.reset();
    if (!d.verdict) {
      auto route = std::make_shared<dns::Route>();
      route->name = plan.plan.site;
      for (const dns::PlannedHost& host : plan.plan.hosts) {
        for (const dns::IpAddress& ip : host.addresses) {
          dns::Destination where = dns::MakeDestination(ip, config_.smtp.port);
          where.mx = host.name;
          where.preference = host.preference;
          route->hosts.push_back(std::move(where));
        }
      }
      d.route = std::move(route);
    }
    OnPlan(domain);
  });
}

// OnPlan - the domain's route or verdict is known (again): everyone waiting for
// it goes on.
void Shard::OnPlan(const std::string& domain) {
  auto it = dns_domains_.find(domain);
  if (it == dns_domains_.end()) return;
  const std::vector<Work*> waiting = std::exchange(it->second.waiting, {});
  const std::shared_ptr<const dns::Route> route = it->second.route;
  const std::optional<dns::MxVerdict> verdict = it->second.verdict;
  for (Work* w : waiting) {
    // Paused or cancelled while its domain was being looked up.
    if (w->job->record.state == queue::JobState::kCancelled) {
      Cancel(w);
      continue;
    }
    if (w->job->record.paused) {
      Release(w);
      continue;
    }
    if (route) {
      Admit(w, domain, route, /*by_dns=*/true, now_);
      continue;
    }
    std::string policy_name;
    if (ExpiresUntried(w, PolicyFor(domain, "", &policy_name), now_)) continue;
    // No connection was made: no reply code, the verdict's enhanced code (RFC
    // 3463) and reason. A permanent verdict (Null MX, NXDOMAIN) bounces at once.
    smtp::Outcome why = MakeOutcome(
        verdict->permanent ? smtp::Outcome::Kind::kPermanent : smtp::Outcome::Kind::kTransient,
        0, verdict->enhanced, verdict->reason);
    if (verdict->local) {
      Postpone(w, why);
    } else if (verdict->permanent) {
      Finish(w, queue::Final::kBounced, why, nullptr);
    } else {
      Defer(w, why, nullptr);
    }
  }
}

bool Shard::ExpiresUntried(Work* w, const DestinationPolicy& policy, absl::Time now) {
  w->retry = &policy.retry;
  w->deadline = ExpiryOf(*w->job, policy.retry);
  // A retry is scheduled at the deadline at the latest (NextAttemptAt) and
  // gets that last try, and so does one that was due before the deadline but
  // is taken just after it (the loop was busy, or it fell due within a tick of
  // the deadline). Anything else taken past the deadline (volleyd was down, or
  // the job's expires had passed) expires untried. Keys hold microseconds, the
  // deadline may not.
  const bool last_try =
      w->entry.attempts > 0 && (w->entry.due >= w->deadline - absl::Microseconds(1) ||
                                now - w->entry.due < kLateRetryGrace);
  if (now >= w->deadline && !last_try) {
    Expire(w);
    return true;
  }
  return false;
}

void Shard::Admit(Work* w, std::string_view domain,
                  const std::shared_ptr<const dns::Route>& route, bool by_dns, absl::Time now) {
  std::string policy_name;
  const DestinationPolicy& policy = PolicyFor(domain, route->name, &policy_name);
  std::string key = absl::StrCat(route->name, "|", policy_name);
  auto& d = destinations_[key];
  if (!d) {
    d = std::make_unique<Destination>();
    d->policy = &policy;
    d->pool = policy_name.empty() ? route->name : key;
    d->by_dns = by_dns;
    // A static route is whole on this shard (its domains share a partition).
    if (by_dns && place_.sites != nullptr) d->sharing = place_.sites->Join(key, place_.index);
    d->message_tokens = MessageBucket(*d);
    d->connection_tokens = ConnectionBucket(*d);
    // Looked up once: the name (route or site) stays with the destination.
    d->counters = &metrics_->Destination(route->name);
  }
  if (d->route != route) {
    // New, or the site's addresses were looked up again: a host keeps its
    // down mark across the change, by address.
    std::vector<absl::Time> down(route->hosts.size(), absl::InfinitePast());
    if (d->route) {
      for (size_t i = 0; i < route->hosts.size(); ++i) {
        for (size_t j = 0; j < d->route->hosts.size(); ++j) {
          if (d->route->hosts[j].name == route->hosts[i].name) down[i] = d->host_down_until[j];
        }
      }
    }
    d->route = route;
    d->host_down_until = std::move(down);
  }
  if (ExpiresUntried(w, policy, now)) return;
  PushReady(d.get(), w, /*front=*/false);
}

absl::Status Shard::RefillOrBackOff() {
  const absl::Status st = Refill(now_);
  if (st.ok()) {
    if (refill_retry_wait_ > absl::ZeroDuration()) {
      std::fprintf(stderr, "volleyd: shard %zu: queue reads work again\n", place_.index);
      refill_retry_wait_ = absl::ZeroDuration();
    }
    return st;
  }
  // Corruption is for an operator; anything else (EMFILE, EIO, RocksDB holding
  // writes) clears, and what is under way goes on meanwhile.
  if (absl::IsDataLoss(st)) return st;
  if (refill_retry_wait_ == absl::ZeroDuration()) {
    std::fprintf(stderr, "volleyd: shard %zu: taking work from the queue failed: %s (retrying)\n",
                 place_.index, std::string(st.message()).c_str());
  }
  refill_retry_wait_ = std::clamp(refill_retry_wait_ * 2, kRefillInterval, kRefillRetryMax);
  refill_retry_at_ = now_ + refill_retry_wait_;
  return absl::OkStatus();
}

absl::Status Shard::Refill(absl::Time now) {
  TakeReadyJobs();
  const size_t window = place_.window;
  std::vector<uint32_t> finished;
  // Each refill starts one job further on, so that when the window is short the
  // jobs take turns at it instead of the oldest job always going first.
  std::vector<Job*> order;
  const auto split = jobs_.lower_bound(refill_from_);
  for (auto it = split; it != jobs_.end(); ++it) order.push_back(it->second.get());
  for (auto it = jobs_.begin(); it != split; ++it) order.push_back(it->second.get());
  if (!order.empty()) refill_from_ = order.front()->record.job_no + 1;
  // A job of a higher priority (the header's 0..9, 9 first) takes from the queue
  // first; jobs of one priority keep their turns.
  std::stable_sort(order.begin(), order.end(),
                   [](const Job* a, const Job* b) { return a->header.priority > b->header.priority; });
  // Rounds of at most kTakeBatch per partition of a job, until the window is
  // full or no job has more due: one refill can fill the window, and jobs still
  // alternate. No more than a window's worth is taken in all, even when what is
  // taken ends at once (expired, no route) and frees its place: the outcomes of
  // one loop turn stay bounded too.
  size_t budget = window;
  for (bool first_round = true; !order.empty(); first_round = false) {
    std::vector<Job*> more;
    for (Job* job : order) {
      if (in_flight_ >= window || budget == 0) {
        more.push_back(job);
        continue;
      }
      if (job->record.paused) continue;
      // A cancelled job's recipients all go, due or not.
      const absl::Time due_by =
          job->record.state == queue::JobState::kCancelled ? absl::InfiniteFuture() : now;
      bool job_has_more = false;
      const size_t scans = job->scans.size();
      for (size_t i = 0; i < scans; ++i) {
        PartitionScan* scan = &job->scans[(job->next_scan + i) % scans];
        if (scan->empty || now < scan->idle_until) continue;
        if (in_flight_ >= window || budget == 0) {
          job_has_more = true;
          break;
        }
        const size_t want = std::min({kTakeBatch, window - in_flight_, budget});
        ASSIGN_OR_RETURN(const size_t taken, TakeFromJob(job, scan, want, due_by));
        budget -= taken;
        if (taken == want) job_has_more = true;
        if (taken == 0 && first_round && scan->in_flight == 0) {
          RETURN_IF_ERROR(ScanIdle(job, scan));
        }
      }
      if (scans > 0) job->next_scan = (job->next_scan + 1) % scans;
      if (job_has_more) more.push_back(job);
      if (first_round && job->in_flight == 0 &&
          std::all_of(job->scans.begin(), job->scans.end(),
                      [](const PartitionScan& p) { return p.empty; })) {
        finished.push_back(job->record.job_no);
      }
    }
    order = std::move(more);
    if (in_flight_ >= window || budget == 0) break;
  }
  // Recipients may still be due: the window filled, or a scan hit its size.
  more_due_ = !order.empty();
  for (uint32_t job_no : finished) {
    auto it = jobs_.find(job_no);
    // The shard that finishes last marks the job done: its keys are dropped
    // only when no shard has any left.
    if (place_.board->ShardFinished(job_no, place_.index)) {
      jobs_to_mark_done_.push_back(std::move(it->second->record));
    }
    jobs_.erase(it);
  }
  // Kept until written: a failed write is tried again at the next refill.
  while (!jobs_to_mark_done_.empty()) {
    const queue::JobRecord& record = jobs_to_mark_done_.front();
    RETURN_IF_ERROR(queue_->MarkJobDone(record));
    std::fprintf(stderr, "volleyd: job \"%s\" %s\n", record.id.c_str(),
                 record.state == queue::JobState::kCancelled ? "cancelled: finished"
                                                             : "finished");
    jobs_to_mark_done_.pop_front();
  }
  return absl::OkStatus();
}

absl::Status Shard::ScanIdle(Job* job, PartitionScan* scan) {
  // Nothing due and nothing under way: what is left of the partition waits for
  // a later time, or nothing is. Every recipient left is after the cursor then
  // (a deferral is rescheduled later than the scan that took it), so the next
  // due time is found without stepping over the tombstones of what was
  // delivered, and the partition is not scanned again before that time.
  const uint32_t job_no = job->record.job_no;
  ASSIGN_OR_RETURN(std::optional<absl::Time> next,
                   queue_->NextDue(job_no, scan->partition, scan->cursor));
  if (!next.has_value() && !scan->cursor.empty()) {
    // Empty is final (the job's range is dropped once every partition is):
    // make sure from the partition's start.
    ASSIGN_OR_RETURN(next, queue_->NextDue(job_no, scan->partition));
    if (next.has_value()) scan->cursor.clear();
  }
  if (next.has_value()) {
    scan->idle_until = *next;
  } else {
    scan->empty = true;
  }
  return absl::OkStatus();
}

void Shard::Dispatch(absl::Time now) {
  shaping_wake_ = absl::InfiniteFuture();
  ServeBudgetWaiters(now);
  if (!budget_waiters_.empty() && now - last_idle_reclaim_ >= kIdleReclaimInterval) {
    ReclaimIdleConnections();
    last_idle_reclaim_ = now;
  }
  // Only destinations with something to do: at 10,000 destinations a walk over
  // all of them every loop turn was most of the loop (bench/RESULTS.md).
  for (size_t i = 0; i < active_.size();) {
    Destination* d = active_[i];
    DispatchOne(d, now);
    if (d->ready.empty() && d->backoff_level == 0) {
      d->active = false;
      active_[i] = active_.back();
      active_.pop_back();
    } else {
      ++i;
    }
  }
  fair_share_ = budget_waiters_.empty()
                    ? SIZE_MAX
                    : std::max<size_t>(1, place_.connection_budget /
                                              std::max<size_t>(1, active_.size()));
  metrics_->budget_waiting.Set(static_cast<int64_t>(budget_waiters_.size()));
}

void Shard::DispatchOne(Destination* d, absl::Time now) {
  if (d->backoff_level > 0 && now >= d->backoff_step_at) StepBackoff(d, -1, now);
  if (now < d->suspended_until) {
    // Nothing goes out while suspended: what waits is deferred with the reason.
    if (!d->ready.empty()) {
      FailDestination(d, MakeOutcome(smtp::Outcome::Kind::kTransient, 0, "4.7.0",
                                     absl::StrCat("not sent: ", d->route->name,
                                                  " is suspended until ",
                                                  absl::FormatTime("%H:%M:%SZ",
                                                                   d->suspended_until,
                                                                   absl::UTCTimeZone()),
                                                  " after: ", d->backoff_reason)));
    }
    return;
  }
  while (!d->ready.empty() && !d->idle.empty()) {
    if (!d->message_tokens.TryTake(now)) {
      WaitForToken(d, /*messages=*/true, now);
      break;
    }
    d->messages_started.Add(now);
    d->waiting_for_message_token = false;
    Conn* c = d->idle.back();
    d->idle.pop_back();
    c->token_taken = true;
    AssignNext(c);
    // The client may already have decided the transaction without sending a
    // byte (over the server's SIZE, no SMTPUTF8): collect that now, or the
    // connection would wait for a reply nobody is going to send.
    Drain(c);
    MaybeFree(c);
  }
  // Open more connections while there are transactions nobody is about to take.
  while (!d->waiting_for_budget && WantsConnection(*d, now)) {
    if (BudgetSpent() || !budget_waiters_.empty()) {
      // Behind those already waiting, whatever the budget says now.
      WaitForBudget(d);
      break;
    }
    if (!d->connection_tokens.TryTake(now)) {
      WaitForToken(d, /*messages=*/false, now);
      break;
    }
    d->waiting_for_connection_token = false;
    if (OpenConnection(d, now) == Opened::kNoDescriptor) {
      WaitForBudget(d);
      break;
    }
  }
}

void Shard::ReclaimIdleConnections() {
  // Connections that went idle before anyone waited for the budget; from now
  // on AssignNext closes them as they go idle.
  for (auto& [name, d] : destinations_) {
    if (d->ready.empty()) QuitIdle(d.get());
  }
}

void Shard::QuitIdle(Destination* d) {
  const std::vector<Conn*> idle = std::exchange(d->idle, {});
  for (Conn* c : idle) {
    c->client->Quit();
    Kick(c);
  }
}

bool Shard::WantsConnection(const Destination& d, absl::Time now) const {
  // The waiting transactions per connection imply more waiting than sessions
  // starting (sessions_starting <= connections).
  return !stopping_ && now >= d.suspended_until &&
         d.ready.transactions() > kWaitingPerConnection * static_cast<size_t>(d.connections) &&
         d.sessions_starting < d.policy->max_connections_opening &&
         d.connections < MaxConnections(d);
}

void Shard::WaitForBudget(Destination* d, bool again) {
  if (d->waiting_for_budget) return;
  d->waiting_for_budget = true;
  budget_waiters_.push_back(d);
  if (!again) metrics_->budget_waits.Add();
}

void Shard::ServeBudgetWaiters(absl::Time now) {
  // Each waiter gets one connection per turn and goes to the back while it
  // wants more: the budget is shared round robin, not taken by the first.
  for (size_t turns = budget_waiters_.size(); turns > 0 && !budget_waiters_.empty(); --turns) {
    if (BudgetSpent()) return;
    Destination* d = budget_waiters_.front();
    budget_waiters_.pop_front();
    d->waiting_for_budget = false;
    if (!WantsConnection(*d, now)) continue;  // its work went elsewhere meanwhile
    if (!d->connection_tokens.TryTake(now)) {
      WaitForToken(d, /*messages=*/false, now);
      continue;
    }
    d->waiting_for_connection_token = false;
    OpenConnection(d, now);
    if (WantsConnection(*d, now)) WaitForBudget(d, /*again=*/true);
  }
}

// ChooseHost - the host of d's route a new connection goes to: the most preferred
// that is not marked down, and among hosts of that preference (MX hosts with equal
// preference, RFC 5321 section 5.1) one at random, so they share the load; the
// addresses of one host in their order. When every host is down, the one whose
// mark ends first (it may be back).
size_t Shard::ChooseHost(const Destination& d, absl::Time now) {
  const std::vector<dns::Destination>& hosts = d.route->hosts;
  size_t first_up = hosts.size();
  size_t soonest = 0;
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (d.host_down_until[i] <= now) {
      first_up = i;
      break;
    }
    if (d.host_down_until[i] < d.host_down_until[soonest]) soonest = i;
  }
  if (first_up == hosts.size()) return soonest;
  // The MX names of that preference that have an address up, each once.
  std::vector<size_t> candidates;  // the first address up of each
  for (size_t i = first_up; i < hosts.size() && hosts[i].preference == hosts[first_up].preference;
       ++i) {
    if (d.host_down_until[i] > now) continue;
    const bool seen = std::any_of(candidates.begin(), candidates.end(),
                                  [&](size_t k) { return hosts[k].mx == hosts[i].mx; });
    if (!seen) candidates.push_back(i);
  }
  if (candidates.size() == 1) return candidates.front();
  return candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng_)];
}

int Shard::PickSource(Destination* d, int family) {
  const std::vector<size_t>& pool = d->policy->sources;
  if (pool.empty()) return -1;
  d->source_credit.resize(pool.size(), 0);
  int total = 0;
  int best = -1;
  for (size_t i = 0; i < pool.size(); ++i) {
    if (source_addresses_[pool[i]].addr.ss_family != family) continue;
    const int weight = config_.sources[pool[i]].weight;
    d->source_credit[i] += weight;
    total += weight;
    if (best < 0 || d->source_credit[i] > d->source_credit[static_cast<size_t>(best)]) {
      best = static_cast<int>(i);
    }
  }
  if (best < 0) return -2;
  d->source_credit[static_cast<size_t>(best)] -= total;
  return static_cast<int>(pool[static_cast<size_t>(best)]);
}

Shard::Opened Shard::OpenConnection(Destination* d, absl::Time now) {
  const size_t host = ChooseHost(*d, now);
  const dns::Destination& where = d->route->hosts[host];
  const int source = PickSource(d, where.addr.ss_family);
  if (source == -2) {
    // Sending from an address the operator did not list would spend another
    // address's reputation: defer instead.
    FailDestination(d, MakeOutcome(smtp::Outcome::Kind::kTransient, 0, "4.4.0",
                                   absl::StrCat("no egress source of the address family of ",
                                                where.host, " among the destination's sources")));
    return Opened::kFailed;
  }
  const int fd = ::socket(where.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    const int err = errno;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
      // Out of descriptors (or socket memory) whatever the budget said: a limit
      // lowered under volleyd, another process, a reserve too small. Nothing
      // about the destination failed, so nothing is deferred: no connection
      // opens beyond those open now for a while, and d waits for one.
      if (now >= fd_short_until_) {
        std::fprintf(stderr,
                     "volleyd: socket: %s with %zu connections open; new connections wait "
                     "for one to close (for %s at least)\n",
                     std::strerror(err), open_conns_,
                     absl::FormatDuration(kFdShortTime).c_str());
      }
      fd_short_until_ = now + kFdShortTime;
      fd_short_cap_ = open_conns_;
      metrics_->fd_exhausted.Add();
      return Opened::kNoDescriptor;
    }
    FailDestination(d, MakeOutcome(smtp::Outcome::Kind::kTransient, 0, "4.4.0",
                                   absl::StrCat("socket: ", std::strerror(err))));
    return Opened::kFailed;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (source >= 0) {
    // The port is chosen at connect, per destination address, not at bind: many
    // connections from one source would run out of ports otherwise.
    ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    const SourceAddress& from = source_addresses_[static_cast<size_t>(source)];
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&from.addr), from.len) != 0) {
      const int err = errno;
      ::close(fd);
      const EgressSource& e = config_.sources[static_cast<size_t>(source)];
      FailDestination(d, MakeOutcome(smtp::Outcome::Kind::kTransient, 0, "4.4.0",
                                     absl::StrCat("bind to source ", e.name, " (", e.address,
                                                  "): ", std::strerror(err))));
      return Opened::kFailed;
    }
  }
  const uint32_t slot = conns_.Acquire();
  Conn* c = &conns_.at(slot);
  c->slot = slot;
  c->fd = fd;
  c->dest = d;
  c->route = d->route;
  c->host = host;
  c->source = source;
  const DestinationPolicy& p = *d->policy;
  smtp::ClientOptions opts;
  opts.ehlo_name = config_.smtp.ehlo_name;
  if (source >= 0 && !config_.sources[static_cast<size_t>(source)].ehlo_name.empty()) {
    opts.ehlo_name = config_.sources[static_cast<size_t>(source)].ehlo_name;
  }
  opts.reply.max_line = static_cast<size_t>(config_.smtp.max_reply_line);
  opts.pipelining = p.pipelining;
  opts.chunking = p.chunking;
  switch (p.tls) {
    case TlsMode::kOff: opts.tls = smtp::TlsPolicy::kOff; break;
    case TlsMode::kOpportunistic:
      opts.tls = now < d->plaintext_until ? smtp::TlsPolicy::kOff
                                          : smtp::TlsPolicy::kOpportunistic;
      break;
    case TlsMode::kRequired:
    case TlsMode::kVerify: opts.tls = smtp::TlsPolicy::kRequired; break;
  }
  c->client = std::make_unique<smtp::Client>(opts);
  c->recv_buffer.reset(new char[kRecvBufferSize]);
  SetConnDeadline(c, now + p.connect_timeout);
  ++d->connections;
  ++d->sessions_starting;
  ++open_conns_;
  metrics_->connections_opened.Add();
  metrics_->connections_open.Set(static_cast<int64_t>(open_conns_));
  ring_.PrepConnect(fd, reinterpret_cast<const sockaddr*>(&where.addr), where.addr_len,
                    conns_.Tag(slot, kOpConnect));
  ++c->pending_ops;
  return Opened::kYes;
}

void Shard::OnCompletion(uint64_t tag, int result) {
  const auto op = static_cast<Op>(base::SlotTable<Conn>::OpOf(tag));
  if (op == kOpDnsPoll) {
    OnDnsPoll(tag, result);
    return;
  }
  if (op == kOpDnsPollRemove) return;
  if (op == kOpCommitDone) {
    OnCommitDone();
    PostCommitRead();
    return;
  }
  if (op == kOpIntakeEvent) {
    TakeReadyJobs();
    if (result < 0 && result != -EINTR && result != -EAGAIN) {
      // Reading the eventfd failed: do not spin on it. Refill looks in the
      // mailbox every turn anyway; this read only makes new jobs start sooner.
      std::fprintf(stderr, "volleyd: intake wake-up read failed: %s; polling instead\n",
                   std::strerror(-result));
      return;
    }
    PostIntakeRead();
    return;
  }
  Conn* c = conns_.Find(tag);
  if (c == nullptr) return;  // stale: its connection is gone
  --c->pending_ops;
  switch (op) {
    case kOpConnect:
      if (result < 0) {
        c->client->FeedIoError(absl::StrCat("connect to ", HostOf(c).name, ": ",
                                            std::strerror(-result)));
        break;
      }
      SetConnDeadline(c, now_ + c->dest->policy->greeting_timeout);
      ring_.PrepRecv(c->fd, c->recv_buffer.get(), kRecvBufferSize, conns_.Tag(c->slot, kOpRecv));
      ++c->pending_ops;
      break;
    case kOpRecv:
      if (c->closing) break;
      if (result <= 0) {
        if (result == 0) {
          c->client->FeedEof();
        } else {
          c->client->FeedIoError(absl::StrCat("recv: ", std::strerror(-result)));
        }
        break;
      }
      OnReceived(c, std::string_view(c->recv_buffer.get(), static_cast<size_t>(result)));
      ring_.PrepRecv(c->fd, c->recv_buffer.get(), kRecvBufferSize, conns_.Tag(c->slot, kOpRecv));
      ++c->pending_ops;
      break;
    case kOpSend:
      c->send_in_flight = false;
      if (c->closing) break;
      if (result < 0) {
        c->client->FeedIoError(absl::StrCat("send: ", std::strerror(-result)));
        break;
      }
      c->send_offset += static_cast<size_t>(result);
      break;
    default:
      break;
  }
  if (!c->closing) Drain(c);
  MaybeFree(c);
}

void Shard::OnReceived(Conn* c, std::string_view bytes) {
  if (!c->tls) {
    c->client->Feed(bytes);
    return;
  }
  c->tls->FeedCiphertext(bytes);
  if (!c->tls->established()) {
    ContinueHandshake(c);
    if (!c->tls->established()) return;
  }
  // Decrypt in receive-buffer-sized pieces: the client buffers only what it needs.
  for (;;) {
    c->plaintext.clear();
    absl::StatusOr<size_t> n = c->tls->ReadPlaintext(&c->plaintext, kRecvBufferSize);
    if (!n.ok()) {
      c->client->FeedIoError(absl::StrCat("TLS: ", n.status().message()));
      return;
    }
    if (*n == 0) break;
    c->client->Feed(c->plaintext);
  }
  if (c->tls->peer_closed()) c->client->FeedEof();
}

void Shard::StartTls(Conn* c) {
  const DestinationPolicy& p = *c->dest->policy;
  tls::SessionOptions opts;
  // SNI names the host (none for an IP literal, which is all static routes have);
  // tls_match, when set, names what the certificate must carry instead.
  opts.server_name = p.tls_match.empty() ? HostOf(c).host : p.tls_match.front();
  if (p.tls_match.size() > 1) {
    opts.also_match.assign(p.tls_match.begin() + 1, p.tls_match.end());
  }
  if (p.tls == TlsMode::kVerify) opts.verify = tls::Verify::kChainAndHost;
  absl::StatusOr<tls::Session> session =
      tls::Session::Create(*tls_context_, tls::Role::kClient, std::move(opts));
  if (!session.ok()) {
    c->client->FeedIoError(absl::StrCat("TLS: ", session.status().message()));
    return;
  }
  c->tls = std::make_unique<tls::Session>(*std::move(session));
  ContinueHandshake(c);
}

void Shard::ContinueHandshake(Conn* c) {
  absl::StatusOr<tls::Session::Progress> progress = c->tls->Handshake();
  if (!progress.ok()) {
    const DestinationPolicy& p = *c->dest->policy;
    std::string what = "TLS handshake";
    if (p.tls == TlsMode::kVerify) {
      absl::StrAppend(&what, " (the certificate must name ",
                      p.tls_match.empty() ? HostOf(c).host : absl::StrJoin(p.tls_match, " or "),
                      ")");
    }
    c->client->FeedIoError(absl::StrCat(what, ": ", progress.status().message()));
    return;
  }
  if (*progress == tls::Session::Progress::kDone) {
    c->tls_version = c->tls->version();
    metrics_->tls_sessions[metrics::TlsVersionIndex(c->tls_version)].Add();
    c->tls_cipher = c->tls->cipher();
    c->client->TlsEstablished();
  }
}

void Shard::Drain(Conn* c) {
  for (;;) {
    smtp::Event ev = c->client->Next();
    if (std::holds_alternative<smtp::NeedData>(ev)) break;
    if (std::holds_alternative<smtp::StartTls>(ev)) {
      StartTls(c);
    } else if (std::holds_alternative<smtp::SessionReady>(ev)) {
      c->session_ready = true;
      --c->dest->sessions_starting;
      AssignNext(c);
    } else if (auto* done = std::get_if<smtp::TransactionDone>(&ev)) {
      metrics_->transaction_seconds.Observe(absl::ToDoubleSeconds(now_ - c->transaction_started));
      std::vector<Work*> works = std::exchange(c->current, {});
      VOLLEY_CHECK(!works.empty() && done->rcpt_outcomes.size() == works.size(),
                   "a transaction result that does not match its recipients");
      std::vector<Work*> next_transaction;
      bool any_accepted = false;
      for (const smtp::Outcome& o : done->rcpt_outcomes) {
        any_accepted |= o.kind == smtp::Outcome::Kind::kAccepted;
      }
      for (size_t i = 0; i < works.size(); ++i) {
        Work* w = works[i];
        const smtp::Outcome& o = done->rcpt_outcomes[i];
        switch (o.kind) {
          case smtp::Outcome::Kind::kAccepted:
            Finish(w, queue::Final::kDelivered, o, c->dest, c);
            break;
          case smtp::Outcome::Kind::kPermanent:
            Finish(w, queue::Final::kBounced, o, c->dest, c);
            break;
          case smtp::Outcome::Kind::kTransient:
            // 452 to RCPT: too many recipients for this transaction (RFC 5321
            // 4.5.3.1.10). When others got through, the rest go in the next
            // transaction, not counted as an attempt; when none did, the server
            // means "later", and that is a deferral.
            if (any_accepted && o.stage == smtp::Stage::kRcpt && o.code == 452) {
              next_transaction.push_back(w);
            } else {
              Defer(w, o, c->dest, c);
            }
            break;
        }
      }
      // Pushed to the front in reverse, so they keep their order.
      for (auto it = next_transaction.rbegin(); it != next_transaction.rend(); ++it) {
        PushReady(c->dest, *it, /*front=*/true);
      }
      ++c->messages;
      AssignNext(c);
    } else if (auto* closed = std::get_if<smtp::SessionClosed>(&ev)) {
      if (c->tls && !c->tls->established() &&
          c->dest->policy->tls == TlsMode::kOpportunistic) {
        // The handshake failed (an error, the server hanging up, a timeout). RFC
        // 3207 section 4.1 lets the client carry on without TLS; a server whose
        // handshake fails would fail the next one too, so plaintext for a while.
        c->dest->plaintext_until = now_ + config_.smtp.tls_fallback_time;
        c->tls_fell_back = true;
      }
      if (!c->session_ready) {
        Destination* d = c->dest;
        --d->sessions_starting;
        if (closed->reason.kind != smtp::Outcome::Kind::kAccepted) {
          metrics_->connections_failed[static_cast<size_t>(FailureOf(closed->reason))].Add();
        }
        if (closed->reason.kind != smtp::Outcome::Kind::kAccepted && !c->tls_fell_back) {
          // The host could not be reached or refused the session (a 421 or 554
          // greeting, EHLO refused, TLS it must have missing): the next host is
          // tried, as for MX hosts (RFC 5321 section 5.1). When none is left,
          // what waits would meet the same fate, so it is deferred now rather
          // than left to spin.
          MarkHostDown(d, *c);
          const bool another_host =
              std::any_of(d->host_down_until.begin(), d->host_down_until.end(),
                          [&](absl::Time t) { return t <= now_; });
          if (!another_host) FailDestination(d, closed->reason, c);
        }
      }
      CountReplies(c);
      CloseConn(c);
      return;
    }
  }
  CountReplies(c);
  Kick(c);
}

void Shard::CountReplies(Conn* c) {
  const std::array<uint32_t, 4> counts = c->client->TakeReplyCounts();
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] != 0) metrics_->replies[i].Add(counts[i]);
  }
}

void Shard::PublishDestinationStates(absl::Time now) {
  std::string json;
  bool first = true;
  for (const auto& [key, d] : destinations_) {
    const bool suspended = now < d->suspended_until;
    if (d->backoff_level == 0 && !suspended) continue;
    if (!first) json += ",";
    first = false;
    json += "{\"name\":";
    base::AppendJsonString(&json, d->route->name);
    // The pool: the route or site and the [destination] table it goes by.
    json += ",\"pool\":";
    base::AppendJsonString(&json, key);
    absl::StrAppend(&json, ",\"state\":\"", suspended ? "suspended" : "backoff",
                    "\",\"level\":", d->backoff_level, ",\"max_connections\":", MaxConnections(*d),
                    ",\"max_message_rate\":", absl::StrFormat("%.3f", MessageRate(*d)),
                    ",\"until\":\"",
                    absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                                     suspended ? d->suspended_until : d->backoff_step_at,
                                     absl::UTCTimeZone()),
                    "\",\"reason\":");
    base::AppendJsonString(&json, d->backoff_reason);
    json += "}";
  }
  destination_states_->Publish(std::move(json), place_.index);
}

void Shard::ReportSites() {
  std::vector<std::string> keys;
  std::vector<Destination*> pools;
  for (auto& [key, d] : destinations_) {
    if (!d->by_dns || (d->ready.empty() && d->connections == 0)) continue;
    keys.push_back(key);
    pools.push_back(d.get());
  }
  const std::vector<int> sharing = place_.sites->Report(place_.index, keys);
  for (size_t i = 0; i < pools.size(); ++i) SetSharing(pools[i], sharing[i]);
}

void Shard::SetSharing(Destination* d, int sharing) {
  if (d->sharing == sharing) return;
  d->sharing = sharing;
  d->message_tokens = MessageBucket(*d);
  d->connection_tokens = ConnectionBucket(*d);
}

void Shard::MeasureBackoffRates() {
  for (auto& [key, d] : destinations_) {
    if (d->backoff_level == 0 || d->backoff_base_rate > 0 ||
        d->policy->max_message_rate.limited()) {
      continue;
    }
    // Backed off before there was a measure: limit the rate once there is one.
    d->backoff_base_rate = MeasuredBase(*d);
    if (d->backoff_base_rate == 0) continue;
    d->message_tokens = MessageBucket(*d);
    std::fprintf(stderr, "volleyd: %s: backoff level %d: %.1f messages/s at most (measured)\n",
                 d->pool.c_str(), d->backoff_level, MessageRate(*d));
  }
}

void Shard::PublishLoopMetrics(absl::Time turn_started) {
  if (now_ - last_states_ >= absl::Seconds(1)) {
    MeasureBackoffRates();
    if (destination_states_ != nullptr) PublishDestinationStates(now_);
    if (place_.sites != nullptr) ReportSites();
    last_states_ = now_;
  }
  metrics_->in_flight.Set(static_cast<int64_t>(in_flight_));
  const absl::Duration busy = absl::Now() - turn_started - ring_.last_wait();
  if (busy > absl::ZeroDuration()) {
    metrics_->busy_nanos.Add(static_cast<uint64_t>(absl::ToInt64Nanoseconds(busy)));
  }
  const dns::Router::Stats& dns = router_->stats();
  for (size_t i = 0; i < dns.answers.size(); ++i) {
    metrics_->dns_queries[i].Add(dns.answers[i] - dns_counted_.answers[i]);
  }
  metrics_->dns_cache_hits.Add(dns.cache_hits - dns_counted_.cache_hits);
  metrics_->dns_cache_misses.Add(dns.cache_misses - dns_counted_.cache_misses);
  dns_counted_ = dns;
  const dns::Resolver::Stats asked = resolver_->stats();
  metrics_->dns_sent.Add(asked.sent - resolver_counted_.sent);
  metrics_->dns_queue_full.Add(asked.refused - resolver_counted_.refused);
  metrics_->fd_exhausted.Add(asked.no_descriptor - resolver_counted_.no_descriptor);
  metrics_->dns_queued.Set(static_cast<int64_t>(asked.queued));
  metrics_->dns_in_flight.Set(static_cast<int64_t>(asked.in_flight));
  resolver_counted_ = asked;
}

void Shard::WaitForToken(Destination* d, bool messages, absl::Time now) {
  bool& waiting = messages ? d->waiting_for_message_token : d->waiting_for_connection_token;
  if (!waiting) {
    metrics_->rate_limit_waits[messages ? 0 : 1].Add();
    waiting = true;
  }
  TokenBucket& bucket = messages ? d->message_tokens : d->connection_tokens;
  shaping_wake_ = std::min(shaping_wake_, bucket.NextAt(now));
}

void Shard::MarkHostDown(Destination* d, const Conn& c) {
  const std::string& name = c.route->hosts[c.host].name;
  // The route may have been replaced since the connection opened: by address.
  for (size_t i = 0; i < d->route->hosts.size(); ++i) {
    if (d->route->hosts[i].name == name) d->host_down_until[i] = now_ + kHostDownTime;
  }
}

void Shard::AssignNext(Conn* c) {
  Destination* d = c->dest;
  // A session that just ended (TransactionDone comes before SessionClosed) or
  // is already saying goodbye takes no new work.
  if (!c->client->idle()) return;
  if (stopping_ || c->messages >= d->policy->max_messages_per_connection ||
      d->connections > MaxConnections(*d) || now_ < d->suspended_until ||
      (!budget_waiters_.empty() &&
       (d->ready.empty() || static_cast<size_t>(d->connections) > fair_share_))) {
    // Also: backed off below the connections open, or suspended, or others wait
    // for the connection budget while this destination has no work for the
    // connection or more than its share: this one goes.
    c->client->Quit();
    return;
  }
  if (d->ready.empty()) {
    d->idle.push_back(c);
    return;
  }
  if (!c->token_taken) {
    if (!d->message_tokens.TryTake(now_)) {
      // Over the destination's message rate: wait idle for the next token.
      d->idle.push_back(c);
      WaitForToken(d, /*messages=*/true, now_);
      return;
    }
    d->messages_started.Add(now_);
    d->waiting_for_message_token = false;
  }
  c->token_taken = false;
  std::vector<Work*> works = d->ready.Take();
  const Work* first = works.front();
  smtp::Envelope env;
  env.id = first->entry.line;
  // One group shares a job and a domain, and only a job whose message is the
  // same for all recipients has groups larger than one: the first recipient's
  // rendering is everyone's.
  for (const Work* w : works) env.rcpts.push_back(w->rcpt.to);
  Job* job = first->job;
  composer_.Compose(*job->plan, job->header, *job->tpl, first->rcpt, first->entry.line, now_,
                    c->client->caps(), &env);
  if (!job->plan->sign_error.empty() && !job->plan->sign_error_logged) {
    job->plan->sign_error_logged = true;
    std::fprintf(stderr, "volleyd: job \"%s\": sent without a DKIM signature: %s\n",
                 job->record.id.c_str(), job->plan->sign_error.c_str());
  }
  if (absl::Status st = c->client->StartTransaction(std::move(env)); !st.ok()) {
    // The client refused (e.g. bytes arrived on the idle connection, which ends
    // the session as a protocol error): the work goes back first in line for
    // another connection, untouched.
    for (auto it = works.rbegin(); it != works.rend(); ++it) PushReady(d, *it, /*front=*/true);
    return;
  }
  c->current = std::move(works);
  c->transaction_started = now_;
}

// PolicyFor - the [destination] entry for the recipient's domain, else for the
// route, else [smtp]'s defaults; *name is the entry's name ("" for the defaults).
const DestinationPolicy& Shard::PolicyFor(std::string_view domain, std::string_view route_name,
                                          std::string* name) const {
  for (std::string key : {absl::AsciiStrToLower(base::Sv(domain)), std::string(route_name)}) {
    if (key.empty()) continue;
    if (auto it = policies_.find(key); it != policies_.end()) {
      *name = std::move(key);
      return *it->second;
    }
  }
  name->clear();
  return config_.smtp.defaults;
}

void Shard::PushReady(Destination* d, Work* w, bool front) {
  Activate(d);
  std::string group = absl::StrCat(w->job->record.job_no);
  size_t limit = 1;
  if (w->job->shared_message) {
    absl::StrAppend(&group, "/", absl::AsciiStrToLower(base::Sv(queue::DomainOf(w->rcpt.to))));
    limit = static_cast<size_t>(d->policy->max_recipients_per_transaction);
  }
  if (front) {
    d->ready.PushFront(group, limit, w, w->job->header.priority);
  } else {
    d->ready.Push(group, limit, w, w->job->header.priority);
  }
}

void Shard::FlushOutput(Conn* c) {
  if (c->send_in_flight || c->closing) return;
  if (c->send_offset >= c->send_buffer.size()) {
    c->send_buffer.clear();
    c->send_offset = 0;
    const std::string_view out = c->client->PendingOutput();
    if (c->tls) {
      if (!out.empty() && c->tls->established()) {
        if (absl::Status st = c->tls->WritePlaintext(out); !st.ok()) {
          c->client->FeedIoError(absl::StrCat("TLS: ", st.message()));
          return;
        }
        c->client->ConsumeOutput(out.size());
      }
      const std::string_view records = c->tls->PendingCiphertext();
      if (records.empty()) return;
      c->send_buffer.assign(records);
      c->tls->ConsumeCiphertext(records.size());
    } else {
      if (out.empty()) return;
      c->send_buffer.assign(out);
      c->client->ConsumeOutput(out.size());
    }
  }
  ring_.PrepSend(c->fd, c->send_buffer.data() + c->send_offset,
                 c->send_buffer.size() - c->send_offset, conns_.Tag(c->slot, kOpSend));
  c->send_in_flight = true;
  ++c->pending_ops;
}

void Shard::SetDeadline(Conn* c, absl::Time now) {
  const DestinationPolicy& p = *c->dest->policy;
  if (c->send_in_flight) {
    // The server is not taking what we write: a bound on each write, however long
    // the message (RFC 5321 section 4.5.3.2.5's data block timeout).
    SetConnDeadline(c, now + p.data_block_timeout);
    return;
  }
  switch (c->client->waiting_for()) {
    case smtp::Wait::kGreeting: SetConnDeadline(c, now + p.greeting_timeout); break;
    case smtp::Wait::kEhlo:
    case smtp::Wait::kTlsHandshake: SetConnDeadline(c, now + p.ehlo_timeout); break;
    case smtp::Wait::kMail:
    case smtp::Wait::kRset: SetConnDeadline(c, now + p.mail_timeout); break;
    case smtp::Wait::kRcpt: SetConnDeadline(c, now + p.rcpt_timeout); break;
    case smtp::Wait::kDataInit: SetConnDeadline(c, now + p.data_timeout); break;
    case smtp::Wait::kDataDone: SetConnDeadline(c, now + p.data_done_timeout); break;
    case smtp::Wait::kQuit: SetConnDeadline(c, now + p.quit_timeout); break;
    case smtp::Wait::kNone:
      SetConnDeadline(c, c->current.empty() ? now + p.idle_timeout : absl::InfiniteFuture());
      break;
  }
}

void Shard::CloseConn(Conn* c) {
  if (c->closing) return;
  c->closing = true;
  // Shut down, it only waits for its operations' completions: no deadline.
  deadlines_.Remove(c->slot);
  auto& idle = c->dest->idle;
  idle.erase(std::remove(idle.begin(), idle.end(), c), idle.end());
  // Pending operations complete (with an error or EOF) once the socket is shut
  // down; the descriptor is closed when the last of them is reaped (MaybeFree,
  // at the end of that completion's handling).
  ::shutdown(c->fd, SHUT_RDWR);
}

void Shard::MaybeFree(Conn* c) {
  if (!c->closing || c->pending_ops > 0) return;
  VOLLEY_CHECK(c->current.empty(), "a connection freed with a transaction under way");
  ::close(c->fd);
  --c->dest->connections;
  --open_conns_;
  metrics_->connections_open.Set(static_cast<int64_t>(open_conns_));
  conns_.Release(c->slot);  // c is gone from here on
}

void Shard::FailDestination(Destination* d, const smtp::Outcome& why, const Conn* c) {
  for (Work* w : d->ready.TakeAll()) Defer(w, why, d, c);
}

void Shard::Record(const Work* w, metrics::DeliveryStatus status, const smtp::Outcome& o,
                   const Destination* d, uint32_t attempt, const Conn* c) {
  const size_t result = static_cast<size_t>(status);
  metrics_->deliveries[result].Add();
  // Outcomes decided without a destination (a DNS verdict, expired untried,
  // cancelled) count as "other".
  metrics::DestinationCounters* counters = d != nullptr ? d->counters : other_counters_;
  if (counters == nullptr) counters = other_counters_ = &metrics_->Destination("other");
  counters->deliveries[result].Add();
  if (status == metrics::DeliveryStatus::kDelivered) {
    metrics_->queue_seconds.Observe(absl::ToDoubleSeconds(now_ - w->job->record.queued_at));
  }
  metrics::DeliveryRecord r;
  r.ts = now_;
  r.job = w->job->record.id;
  r.line = w->entry.line;
  r.rcpt = w->rcpt.to;
  r.status = status;
  r.code = o.code;
  r.enhanced = o.enhanced;
  r.response = o.text;
  r.klass = classifier_->Classify(status, o.code, o.enhanced, o.text);
  if (c != nullptr || d != nullptr) {
    const dns::Destination& host = c != nullptr ? HostOf(c) : d->route->hosts.front();
    r.host = host.host;
    r.port = host.port;
    r.mx = host.mx;
    r.backoff = (c != nullptr ? c->dest : d)->backoff_level;
  }
  r.attempt = attempt;
  if (c != nullptr) {
    r.tls_version = c->tls_version;
    r.tls_cipher = c->tls_cipher;
    if (c->source >= 0) r.source = config_.sources[static_cast<size_t>(c->source)].name;
  }
  metrics::FormatDeliveryRecord(r, &log_buffer_);
}

void Shard::Release(Work* w) {
  --w->job->in_flight;
  --w->scan->in_flight;
  --in_flight_;
  // The key stays in job->taken until the batch holding its outcome is written.
  uncommitted_.emplace_back(w->job->record.job_no, std::move(w->entry.key));
  delete w;
}

metrics::DeliveryStatus StatusOf(queue::Final how) {
  switch (how) {
    case queue::Final::kDelivered: return metrics::DeliveryStatus::kDelivered;
    case queue::Final::kBounced: return metrics::DeliveryStatus::kBounced;
    case queue::Final::kExpired: return metrics::DeliveryStatus::kExpired;
    case queue::Final::kCancelled: return metrics::DeliveryStatus::kCancelled;
  }
  return metrics::DeliveryStatus::kBounced;
}

void Shard::Finish(Work* w, queue::Final how, const smtp::Outcome& o, const Destination* d,
                   const Conn* c) {
  Record(w, StatusOf(how), o, d, w->entry.attempts + 1, c);
  batch_->Remove(w->entry, how);
  Release(w);
}

const BackoffRule* Shard::BackoffRuleFor(const smtp::Outcome& o) const {
  const std::string_view klass =
      classifier_->Classify(metrics::DeliveryStatus::kDeferred, o.code, o.enhanced, o.text);
  for (const BackoffRule& rule : config_.backoff) {
    if (rule.klass == klass) return &rule;
  }
  return nullptr;
}

void Shard::StepBackoff(Destination* d, int step, absl::Time now) {
  Activate(d);  // its steps down are taken in Dispatch
  const int before = d->backoff_level;
  d->backoff_level = std::clamp(d->backoff_level + step, 0, kMaxBackoffLevel);
  if (step > 0) d->backoff_raised = now;
  d->backoff_step_at = now + d->backoff_period;
  if (d->backoff_level == before) return;
  if (before == 0) d->backoff_base_rate = MeasuredBase(*d);
  d->message_tokens = MessageBucket(*d);
  if (step > 0) metrics_->backoff_events[0].Add();
  const double rate = MessageRate(*d);
  std::fprintf(stderr,
               "volleyd: %s: backoff %s to level %d (%d connections, %s messages/s at most)%s%s\n",
               d->pool.c_str(), step > 0 ? "raised" : "eased", d->backoff_level,
               MaxConnections(*d),
               rate > 0 ? absl::StrFormat("%.1f", rate).c_str() : "unlimited",
               step > 0 ? " after: " : "", step > 0 ? d->backoff_reason.c_str() : "");
}

// ApplyBackoffRule - a reply at `d` whose class has a [[backoff]] rule; true when
// the recipient was dealt with (bounced) and must not be deferred.
bool Shard::ApplyBackoffRule(Work* w, const smtp::Outcome& o, Destination* d, const Conn* c) {
  const BackoffRule* rule = BackoffRuleFor(o);
  if (rule == nullptr) return false;
  d->backoff_reason = absl::StrCat(o.code, " ", o.enhanced, " ", o.text.substr(0, 200));
  switch (rule->action) {
    case BackoffAction::kBackoff:
      d->backoff_period = rule->period;
      // One step per burst: replies on parallel connections to the same cause
      // should not take the destination to the bottom at once.
      if (now_ - d->backoff_raised >= rule->period / 10) StepBackoff(d, +1, now_);
      return false;
    case BackoffAction::kSuspend:
      if (now_ >= d->suspended_until) {
        metrics_->backoff_events[1].Add();
        std::fprintf(stderr, "volleyd: %s: suspended for %s after: %s\n", d->route->name.c_str(),
                     absl::FormatDuration(rule->period).c_str(), d->backoff_reason.c_str());
      }
      d->suspended_until = std::max(d->suspended_until, now_ + rule->period);
      return false;
    case BackoffAction::kBounce: {
      smtp::Outcome bounced = o;
      bounced.kind = smtp::Outcome::Kind::kPermanent;
      bounced.text = absl::StrCat("bounced by the [[backoff]] rule for \"", rule->klass, "\": ", o.text);
      Finish(w, queue::Final::kBounced, bounced, d, c);
      return true;
    }
  }
  return false;
}

void Shard::Defer(Work* w, const smtp::Outcome& o, const Destination* d, const Conn* c) {
  // Only a server's own reply on a connection moves the destination's backoff:
  // not the deferrals a suspension or a failed route makes.
  if (c != nullptr && c->dest == d && ApplyBackoffRule(w, o, c->dest, c)) return;
  if (now_ >= w->deadline) {
    // That was the last try: the recipient expires, with the reply that ended it
    // (its code and enhanced code stay the server's, so they agree).
    smtp::Outcome expired = o;
    expired.kind = smtp::Outcome::Kind::kPermanent;
    expired.text = absl::StrCat("message expired after ", w->entry.attempts + 1,
                                " attempts; last reply: ", o.text);
    Finish(w, queue::Final::kExpired, expired, d, c);
    return;
  }
  Record(w, metrics::DeliveryStatus::kDeferred, o, d, w->entry.attempts + 1, c);
  std::uniform_real_distribution<double> jitter(kMinJitter, kMaxJitter);
  batch_->Reschedule(w->entry, NextAttemptAt(*w->retry, w->entry.attempts + 1, jitter(rng_),
                                             now_, w->deadline));
  Release(w);
}

void Shard::Expire(Work* w) {
  // No attempt is made now: the record carries the number of the last one.
  Record(w, metrics::DeliveryStatus::kExpired,
         MakeOutcome(smtp::Outcome::Kind::kPermanent, 0, "5.4.7",
                     absl::StrCat("message expired after ", w->entry.attempts, " attempts")),
         nullptr, w->entry.attempts);
  batch_->Remove(w->entry, queue::Final::kExpired);
  Release(w);
}

void Shard::Postpone(Work* w, const smtp::Outcome& why) {
  // The record carries the number of the last attempt, as Expire's does: none
  // was made now.
  Record(w, metrics::DeliveryStatus::kDeferred, why, nullptr, w->entry.attempts);
  std::uniform_real_distribution<double> jitter(kMinJitter, kMaxJitter);
  batch_->Postpone(w->entry, now_ + kPostponeDelay * jitter(rng_));
  Release(w);
}

void Shard::Cancel(Work* w) {
  // Like Expire: no attempt now, so the record carries the number of the last.
  Record(w, metrics::DeliveryStatus::kCancelled,
         MakeOutcome(smtp::Outcome::Kind::kPermanent, 0, "",
                     "job cancelled before this recipient was sent"),
         nullptr, w->entry.attempts);
  batch_->Remove(w->entry, queue::Final::kCancelled);
  Release(w);
}

absl::Status Shard::Commit() {
  // One unit at a time; what came meanwhile goes with the next.
  if (committer_->busy(place_.index)) return absl::OkStatus();
  if (batch_->size() == 0 && log_buffer_.empty()) {
    // Only keys let go of untouched (a pause): nothing to write.
    ForgetCommitted(std::exchange(uncommitted_, {}));
    return absl::OkStatus();
  }
  Committer::Unit unit;
  unit.log_bytes = std::exchange(log_buffer_, {});
  unit.batch = std::exchange(batch_, queue_->NewOutcomeBatch());
  unit.keys = std::exchange(uncommitted_, {});
  committer_->Submit(std::move(unit), place_.index);
  return absl::OkStatus();
}

// CommitLast - at the end: the unit under way, then what is left, written on
// this thread. What could not be recorded (a full disk) is logged but stays in
// the queue: sent again after a restart, a possible duplicate, never a loss.
absl::Status Shard::CommitLast() {
  committer_->GiveUpWhenStalled();
  size_t unrecorded = 0;
  if (std::optional<Committer::Unit> unit = committer_->WaitDone(place_.index)) {
    if (absl::IsResourceExhausted(unit->status)) {
      unrecorded += unit->batch->size();
    } else {
      RETURN_IF_ERROR(unit->status);
      ForgetCommitted(unit->keys);
    }
  }
  Committer::Unit last;
  last.log_bytes = std::exchange(log_buffer_, {});
  last.batch = std::exchange(batch_, queue_->NewOutcomeBatch());
  committer_->Submit(std::move(last), place_.index);
  std::optional<Committer::Unit> done = committer_->WaitDone(place_.index);
  if (absl::IsResourceExhausted(done->status)) {
    unrecorded += done->batch->size();
  } else {
    RETURN_IF_ERROR(done->status);
  }
  if (unrecorded > 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "stopped with ", unrecorded, " outcomes not recorded in the queue (the disk is "
        "full?): those recipients will be tried again, a possible duplicate, never a loss"));
  }
  return absl::OkStatus();
}

void Shard::ForgetCommitted(const std::vector<std::pair<uint32_t, std::string>>& keys) {
  for (const auto& [job_no, key] : keys) {
    if (auto it = jobs_.find(job_no); it != jobs_.end()) it->second->taken.erase(key);
  }
}

void Shard::PostCommitRead() {
  ring_.PrepRead(committer_->event_fd(place_.index), &commit_counter_, sizeof commit_counter_,
                 base::SlotTable<Conn>::MakeTag(0, 0, kOpCommitDone));
}

void Shard::OnCommitDone() {
  std::optional<Committer::Unit> unit = committer_->TakeDone(place_.index);
  if (!unit.has_value()) return;
  if (!unit->status.ok()) {
    if (fatal_.ok()) fatal_ = unit->status;
    return;
  }
  ForgetCommitted(unit->keys);
}

void Shard::TakeReadyJobs() {
  for (const std::string& id : ready_jobs_->TakeAll(place_.index)) {
    auto record = queue_->FindJob(id);
    absl::Status st = record.ok() ? absl::OkStatus() : record.status();
    if (st.ok() && record->has_value()) st = LoadJob(**record);
    if (!st.ok()) std::fprintf(stderr, "volleyd: %s\n", std::string(st.message()).c_str());
  }
}

void Shard::WatchDnsSocket(int fd, bool readable, bool writable) {
  const unsigned events = (readable ? POLLIN : 0u) | (writable ? POLLOUT : 0u);
  auto it = dns_watches_.find(fd);
  if (it != dns_watches_.end() && it->second.armed && it->second.events != events) {
    // Interest changed, or the socket is about to close: the old poll goes.
    // Its completion (-ECANCELED, or events) carries the old generation and is
    // dropped, even if a new socket gets the same fd meanwhile.
    ring_.PrepPollRemove(base::SlotTable<Conn>::MakeTag(static_cast<uint32_t>(fd),
                                                        it->second.generation, kOpDnsPoll),
                         base::SlotTable<Conn>::MakeTag(0, 0, kOpDnsPollRemove));
    it->second.armed = false;
  }
  if (events == 0) {
    if (it != dns_watches_.end()) dns_watches_.erase(it);
    return;
  }
  DnsWatch& w = dns_watches_[fd];
  if (w.armed) return;  // already polled for these events
  w.events = events;
  w.generation = ++dns_generation_;
  w.armed = true;
  ring_.PrepPollAdd(fd, events,
                    base::SlotTable<Conn>::MakeTag(static_cast<uint32_t>(fd), w.generation,
                                                   kOpDnsPoll));
}

void Shard::OnDnsPoll(uint64_t tag, int result) {
  const int fd = static_cast<int>(base::SlotTable<Conn>::SlotOf(tag));
  auto it = dns_watches_.find(fd);
  if (it == dns_watches_.end() || it->second.generation != base::SlotTable<Conn>::GenerationOf(tag)) {
    return;  // a poll removed since, or a socket closed since
  }
  it->second.armed = false;
  // An error on the poll itself: let c-ares read the socket and find out.
  const unsigned seen = result < 0 ? POLLIN : static_cast<unsigned>(result);
  resolver_->OnSocketReady(fd, (seen & (POLLIN | POLLERR | POLLHUP)) != 0, (seen & POLLOUT) != 0);
  // One-shot polls: watch again unless c-ares let go of the socket meanwhile
  // (or re-registered it, which armed a new poll).
  it = dns_watches_.find(fd);
  if (it == dns_watches_.end() || it->second.armed) return;
  WatchDnsSocket(fd, (it->second.events & POLLIN) != 0, (it->second.events & POLLOUT) != 0);
}

void Shard::SweepDomains(absl::Time now) {
  absl::erase_if(dns_domains_, [&](const auto& entry) {
    const DomainRoute& d = entry.second;
    return !d.resolving && d.waiting.empty() && d.valid_until <= now;
  });
}

void Shard::PostIntakeRead() {
  ring_.PrepRead(ready_jobs_->event_fd(place_.index), &intake_counter_, sizeof intake_counter_,
                 base::SlotTable<Conn>::MakeTag(0, 0, kOpIntakeEvent));
}

absl::Status Shard::Run() {
  RETURN_IF_ERROR(ring_.Init(4096));
  tls::ClientContextOptions tls_opts;
  tls_opts.ca_file = config_.smtp.tls_ca_file;
  ASSIGN_OR_RETURN(tls::Context tls_context, tls::Context::Client(tls_opts));
  tls_context_.emplace(std::move(tls_context));
  batch_ = queue_->NewOutcomeBatch();
  now_ = absl::Now();
  ASSIGN_OR_RETURN(resolver_, dns::Resolver::Create(config_.dns.resolver,
                                                    [this](int fd, bool readable, bool writable) {
                                                      WatchDnsSocket(fd, readable, writable);
                                                    }));
  router_ = std::make_unique<dns::Router>(
      config_.dns.router, resolver_.get(), [this] { return now_; }, [this] { return rng_(); });
  PostCommitRead();
  ASSIGN_OR_RETURN(auto jobs, queue_->ListJobs());
  for (const auto& j : jobs) RETURN_IF_ERROR(LoadJob(j));
  PostIntakeRead();
  absl::Time stop_deadline = absl::InfiniteFuture();
  absl::Time last_refill = absl::InfinitePast();
  for (;;) {
    now_ = absl::Now();
    const absl::Time turn_started = now_;
    if (!stopping_ && stop_->load(std::memory_order_relaxed)) {
      stopping_ = true;
      stop_deadline = now_ + kStopGrace;
      std::fprintf(stderr, "volleyd: stopping: finishing transactions under way\n");
      for (auto& [name, d] : destinations_) QuitIdle(d.get());
    }
    if (stopping_ && (open_conns_ == 0 || now_ >= stop_deadline ||
                      (place_.stop_now != nullptr &&
                       place_.stop_now->load(std::memory_order_relaxed)))) {
      break;
    }
    if (!fatal_.ok()) return fatal_;
    if (!stopping_ && !committer_->stalled() && (now_ - last_refill >= kRefillInterval) &&
        now_ >= refill_retry_at_ && in_flight_ < place_.window) {
      RETURN_IF_ERROR(RefillOrBackOff());
      last_refill = now_;
    }
    Dispatch(now_);
    bool clock_read = false;
    // Sleep until a completion or the tick, but no longer than the next refill
    // when more is due and the window has room: an idle pool must not wait a
    // whole tick for work that is already due.
    absl::Duration wait = kTick;
    if (more_due_ && in_flight_ < place_.window) {
      wait = std::max(absl::Milliseconds(1), last_refill + kRefillInterval - now_);
    }
    if (shaping_wake_ != absl::InfiniteFuture()) {
      wait = std::min(wait, std::max(absl::Milliseconds(1), shaping_wake_ - now_));
    }
    // c-ares's retransmissions and timeouts run from the loop's timer.
    if (std::optional<absl::Duration> dns_due = resolver_->NextTimeout()) {
      wait = std::min(wait, std::max(*dns_due, absl::ZeroDuration()));
    }
    // The next connection deadline (at least 1ms on: one that passed and was
    // handled without moving must not spin the loop).
    if (std::optional<absl::Time> next_deadline = deadlines_.Earliest()) {
      wait = std::min(wait, std::max(absl::Milliseconds(1), *next_deadline - now_));
    }
    RETURN_IF_ERROR(ring_.SubmitAndWait(wait, [&](uint64_t tag, int result) {
      // The wait may have lasted a tick: outcomes and deadlines need the time
      // the completions arrived, not the time the wait began.
      if (!clock_read) {
        now_ = absl::Now();
        clock_read = true;
      }
      OnCompletion(tag, result);
    }));
    now_ = absl::Now();
    resolver_->OnTimer();
    if (now_ - last_sweep_ >= kDomainSweepInterval) {
      SweepDomains(now_);
      last_sweep_ = now_;
    }
    std::vector<uint32_t> late_slots;
    deadlines_.Due(now_, &late_slots);
    std::vector<Conn*> late;
    for (uint32_t slot : late_slots) late.push_back(&conns_.at(slot));
    for (Conn* c : late) {
      if (c->client->waiting_for() == smtp::Wait::kNone && c->current.empty()) {
        // Idle too long: say goodbye.
        auto& idle = c->dest->idle;
        idle.erase(std::remove(idle.begin(), idle.end(), c), idle.end());
        c->client->Quit();
        Kick(c);
        continue;
      }
      c->client->FeedTimeout();
      Drain(c);
      MaybeFree(c);
    }
    RETURN_IF_ERROR(Commit());
    PublishLoopMetrics(turn_started);
  }
  // Work never started stays in the queue as it is; just let go of it.
  for (auto& [name, d] : destinations_) {
    for (Work* w : d->ready.TakeAll()) delete w;
  }
  for (auto& [domain, d] : dns_domains_) {
    for (Work* w : d.waiting) delete w;
    d.waiting.clear();
  }
  conns_.ForEach([](uint32_t, Conn& c) {
    for (Work* w : c.current) delete w;
    c.current.clear();
    ::close(c.fd);
  });
  // The resolver goes now, while everything its callbacks could reach is still
  // there (the router first: it holds the resolver). Left to the destructor,
  // c-ares closing its sockets called back into a half-destroyed shard and
  // volleyd spun there instead of exiting (issue 16).
  router_.reset();
  resolver_.reset();
  dns_watches_.clear();  // their sockets are closed; the ring's teardown ends the polls
  return CommitLast();
}

// ReplayUnappliedOutcomes - at start, before any shard runs: outcomes that
// reached the delivery log but not the queue (a crash between the committer's
// two writes) are applied to the queue now, so that their recipients are not
// sent again and keep one terminal record each.
absl::Status ReplayUnappliedOutcomes(queue::Queue* queue, metrics::DeliveryLog* log,
                                     const RetryConfig& retry) {
  const absl::Time now = absl::Now();
  std::unique_ptr<queue::Queue::OutcomeBatch> batch = queue->NewOutcomeBatch();
  ASSIGN_OR_RETURN(const std::string position, queue->ReadLogPosition());
  if (position.empty()) return absl::OkStatus();  // nothing was ever committed
  absl::StatusOr<std::vector<std::string>> lines = log->LinesAfter(position);
  if (absl::IsNotFound(lines.status())) {
    std::fprintf(stderr,
                 "volleyd: %s; outcomes logged just before a crash, if any, cannot be "
                 "matched: those recipients are tried again\n",
                 std::string(lines.status().message()).c_str());
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(lines.status());
  if (lines->empty()) return absl::OkStatus();
  struct Logged {
    metrics::DeliveryStatus status;
    uint32_t attempt = 0;
  };
  // job id -> line -> the outcomes logged for it, in log order (one, unless
  // commits kept failing before the crash and several turns piled up).
  std::map<std::string, std::map<uint32_t, std::vector<Logged>>> by_job;
  size_t unreadable = 0;
  for (const std::string& text : *lines) {
    absl::StatusOr<metrics::OwnedDeliveryRecord> r = metrics::ParseDeliveryRecord(text);
    if (!r.ok()) {
      ++unreadable;
      continue;
    }
    by_job[r->job][r->line].push_back(Logged{r->status, r->attempt});
  }
  size_t applied = 0;
  for (const auto& [id, logged] : by_job) {
    ASSIGN_OR_RETURN(std::optional<queue::JobRecord> job, queue->FindJob(id));
    if (!job.has_value()) continue;
    std::vector<uint32_t> wanted;
    for (const auto& [line, unused] : logged) wanted.push_back(line);
    std::vector<queue::QueuedRecipient> found;
    RETURN_IF_ERROR(queue->FindLines(job->job_no, wanted, &found));
    for (queue::QueuedRecipient& r : found) {
      // Each outcome in turn, as Commit would have applied it: a deferral
      // moves the entry (the next outcome applies to where it went).
      for (const Logged& l : logged.at(r.line)) {
        const bool untried = l.status == metrics::DeliveryStatus::kExpired ||
                             l.status == metrics::DeliveryStatus::kCancelled;
        // Only the attempt the entry is at: anything else was applied already.
        if (l.attempt != r.attempts + 1 && !(untried && l.attempt == r.attempts)) continue;
        std::optional<queue::Final> final;
        for (queue::Final f : {queue::Final::kDelivered, queue::Final::kBounced,
                               queue::Final::kExpired, queue::Final::kCancelled}) {
          if (l.status == StatusOf(f)) final = f;
        }
        if (final.has_value()) {
          batch->Remove(r, *final);
          ++applied;
          break;
        }
        if (l.status != metrics::DeliveryStatus::kDeferred) continue;
        // The retry time is not in the log: the default policy's interval for
        // this attempt, from now.
        const absl::Time due = now + RetryDelay(retry, l.attempt, 1.0);
        batch->Reschedule(r, due);
        r.key = queue::RecipientKey(r.job_no, r.partition, due, r.line);
        r.due = due;
        ++r.attempts;
        ++applied;
      }
    }
  }
  batch->SetLogPosition(log->position());
  RETURN_IF_ERROR(queue->Apply(*batch));
  std::fprintf(stderr,
               "volleyd: %zu outcomes were logged but not recorded in the queue before a "
               "crash; recorded now (%zu log lines after the last commit, %zu unreadable)\n",
               applied, lines->size(), unreadable);
  return absl::OkStatus();
}

// ReadStoreSnapshot - the queue's side of a scrape (metrics/exporter.h), on the
// exporter's thread: RocksDB is safe to read from any thread.
metrics::StoreSnapshot ReadStoreSnapshot(queue::Queue& q, const Config& config) {
  metrics::StoreSnapshot s;
  absl::StatusOr<std::vector<queue::JobRecord>> jobs = q.ListJobs();
  if (!jobs.ok()) return s;
  for (const queue::JobRecord& record : *jobs) {
    if (record.state != queue::JobState::kReady && record.state != queue::JobState::kCancelled) {
      continue;  // loading, or finished
    }
    absl::StatusOr<queue::JobProgress> p = q.ReadProgress(record.job_no);
    if (!p.ok()) return s;
    metrics::JobSnapshot j;
    j.id = record.id;
    j.state = record.state == queue::JobState::kCancelled ? "cancelling"
              : record.paused                             ? "paused"
                                                          : "ready";
    j.queued_at = record.queued_at;
    j.total = p->total;
    j.delivered = p->delivered;
    j.bounced = p->bounced;
    j.expired = p->expired;
    j.cancelled = p->cancelled;
    j.deferred = p->deferred;
    j.pending = p->pending();
    s.jobs.push_back(std::move(j));
  }
  const queue::Queue::StoreStats stats = q.Stats();
  s.sst_bytes = stats.sst_bytes;
  s.pending_compaction_bytes = stats.pending_compaction_bytes;
  s.write_stalls = stats.write_stalls;
  s.write_stopped = stats.write_stopped;
  s.queue_write_errors = stats.write_errors;
  s.queue_free_bytes = queue::FreeBytes(config.queue_dir).value_or(uint64_t{0});
  s.spool_free_bytes = queue::FreeBytes(config.spool_dir).value_or(uint64_t{0});
  s.free_floor_bytes = config.min_free_space;
  s.ok = true;
  return s;
}

// ReadUint64File - the number a /proc/sys file holds, or nullopt.
std::optional<uint64_t> ReadUint64File(const char* path) {
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return std::nullopt;
  unsigned long long v = 0;
  const bool read = std::fscanf(f, "%llu", &v) == 1;
  std::fclose(f);
  if (!read) return std::nullopt;
  return static_cast<uint64_t>(v);
}

// ShardCount - [delivery] shards, 0 meaning one per CPU; never more than the
// queue has partitions.
size_t ShardCount(const Config& config) {
  size_t n = static_cast<size_t>(config.delivery.shards);
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  return std::min<size_t>(n, queue::kPartitions);
}

// Partitioner - the queue partition of a recipient's domain: a statically
// routed domain goes by its route, so that every domain sharing the route's
// connection pool and limits lands on one shard; any other domain by itself.
queue::Spool::Partitioner Partitioner(const dns::StaticRoutes* routes) {
  return [routes](std::string_view domain) {
    if (const dns::Route* route = routes->Find(domain)) return queue::PartitionOf(route->name);
    return queue::PartitionOf(domain);
  };
}

}  // namespace

absl::Status Engine::Run() {
  ASSIGN_OR_RETURN(auto routes, dns::StaticRoutes::Create(config_.routes));
  // Keys first: a missing or weak key stops volleyd before it takes anything in.
  std::vector<std::string> key_warnings;
  ASSIGN_OR_RETURN(const Credentials credentials, Credentials::Load(config_, &key_warnings));
  for (const std::string& w : key_warnings) {
    std::fprintf(stderr, "volleyd: warning: %s\n", w.c_str());
  }
  ASSIGN_OR_RETURN(queue::Spool spool, queue::Spool::Open(config_.spool_dir));
  spool.SetPartitioner(Partitioner(routes.get()));
  spool.SetJobCheck([&credentials](const queue::JobHeader& h, const queue::Template& t) {
    return credentials.CheckJob(h, t);
  });
  queue::QueueOptions qopts;
  qopts.sync_outcomes = config_.sync_outcomes;
  qopts.max_open_files = config_.queue_max_open_files;
  ASSIGN_OR_RETURN(auto queue, queue::Queue::Open(config_.queue_dir, qopts));
  metrics::DeliveryLogOptions log_options;
  log_options.max_size = config_.delivery_log.max_size;
  log_options.max_age = config_.delivery_log.max_age;
  log_options.keep = config_.delivery_log.keep;
  ASSIGN_OR_RETURN(auto log, metrics::DeliveryLog::Open(config_.log_dir, log_options));
  ASSIGN_OR_RETURN(const metrics::Classifier classifier,
                   metrics::Classifier::Create(config_.classify));
  ASSIGN_OR_RETURN(std::vector<std::string> forgotten, spool.ForgetAbandonedIntakes(*queue));
  for (const std::string& id : forgotten) {
    std::fprintf(stderr,
                 "volleyd: job \"%s\": its intake was interrupted and its file is no longer "
                 "in incoming/; what was queued of it is dropped (drop the file again to "
                 "send it)\n",
                 id.c_str());
  }
  RETURN_IF_ERROR(ReplayUnappliedOutcomes(queue.get(), log.get(), config_.retry));
  const size_t shard_count = ShardCount(config_);
  const FdReserve reserve = DefaultFdReserve(static_cast<size_t>(config_.queue_max_open_files),
                                             config_.dns.resolver.servers.size());
  ASSIGN_OR_RETURN(const ConnectionBudget budget,
                   PlanConnectionBudget(CurrentFileLimit(), shard_count, reserve,
                                        static_cast<size_t>(config_.delivery.max_connections)));
  std::fprintf(stderr, "volleyd: %s\n", DescribeBudget(budget, reserve, shard_count).c_str());
  if (std::optional<uint64_t> granted = ReadUint64File("/proc/sys/net/core/rmem_max");
      granted.has_value() && *granted < config_.dns.resolver.receive_buffer) {
    std::fprintf(stderr,
                 "volleyd: warning: net.core.rmem_max is %llu bytes, below [dns] receive_buffer "
                 "(%llu): answers to many DNS lookups at once may be dropped, each then waiting "
                 "[dns] timeout; raise it (sysctl net.core.rmem_max=%llu) or lower [dns] "
                 "max_pending\n",
                 static_cast<unsigned long long>(*granted),
                 static_cast<unsigned long long>(config_.dns.resolver.receive_buffer),
                 static_cast<unsigned long long>(config_.dns.resolver.receive_buffer));
  }
  Committer committer(queue.get(), log.get(), shard_count);
  RETURN_IF_ERROR(committer.Start());
  JobBoard board(shard_count);
  SiteShares sites(shard_count);
  ReadyJobs ready_jobs(shard_count);
  std::vector<std::string> configured;
  for (const auto& [name, policy] : config_.destinations) configured.push_back(name);
  metrics::MetricsOptions metrics_options;
  metrics_options.max_destinations = static_cast<size_t>(config_.metrics_top_destinations);
  metrics::IntakeMetrics intake_metrics;
  DestinationStates destination_states(shard_count);
  std::vector<std::unique_ptr<metrics::ShardMetrics>> shard_metrics;
  std::vector<std::unique_ptr<Shard>> shards;
  for (size_t i = 0; i < shard_count; ++i) {
    shard_metrics.push_back(std::make_unique<metrics::ShardMetrics>(metrics_options, configured));
    ShardPlace place;
    place.index = i;
    place.count = shard_count;
    place.committer = &committer;
    place.board = &board;
    place.sites = shard_count > 1 ? &sites : nullptr;
    // The window is volleyd's: each shard gets its share.
    place.window = std::max<size_t>(1, static_cast<size_t>(config_.delivery.window) / shard_count);
    place.connection_budget = budget.per_shard[i];
    place.stop_now = &stop_now_;
    shards.push_back(std::make_unique<Shard>(config_, place, queue.get(), routes.get(),
                                             &ready_jobs, &stop_, shard_metrics.back().get(),
                                             &classifier, &credentials));
    shards.back()->SetDestinationStates(&destination_states);
    shard_metrics.back()->connection_budget.Set(static_cast<int64_t>(budget.per_shard[i]));
  }
  absl::Status failed;
  {
    IntakeThread intake(spool, queue.get(), queue::JobLimits{}, &ready_jobs,
                        queue::FreeSpaceFloor{{config_.queue_dir}, config_.min_free_space, {}},
                        &intake_metrics);
    intake.Start();
    // volleyctl's way in (engine/admin.h); an address that cannot be bound stops
    // volleyd here with the address in the error.
    ASSIGN_OR_RETURN(auto admin,
                     AdminServer::Create(config_.admin_listen, queue.get(), &ready_jobs));
    metrics::ExporterSources sources;
    for (const auto& m : shard_metrics) sources.shards.push_back(m.get());
    sources.intake = &intake_metrics;
    sources.store = [this, q = queue.get(), &committer, l = log.get()] {
      metrics::StoreSnapshot s = ReadStoreSnapshot(*q, config_);
      s.writes_stalled = committer.stalled();
      s.log_write_errors = l->write_errors();
      if (!s.ok) s.queue_write_errors = q->Stats().write_errors;
      return s;
    };
    sources.max_jobs = static_cast<size_t>(config_.metrics_max_jobs);
    ASSIGN_OR_RETURN(auto exporter,
                     metrics::Exporter::Start(config_.metrics_listen, std::move(sources)));
    admin->SetDestinationStates(&destination_states);
    admin->Start();
    std::fprintf(stderr, "volleyd: running: %zu shard%s, spool %s, queue %s, log %s\n",
                 shard_count, shard_count == 1 ? "" : "s", config_.spool_dir.c_str(),
                 config_.queue_dir.c_str(), log->path().c_str());
    // One thread per shard; a shard that fails stops the others (the first
    // failure is what volleyd reports).
    std::mutex failed_mu;
    const auto run_shard = [&](Shard* shard, size_t index) {
      // Named for top -H; not the main thread, whose name is the process's.
      if (index > 0) {
        const std::string name = absl::StrCat("volley-shard", index);
        pthread_setname_np(pthread_self(), name.c_str());
      }
      absl::Status st = shard->Run();
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(failed_mu);
        if (failed.ok()) failed = std::move(st);
        stop_.store(true, std::memory_order_relaxed);
      }
    };
    std::vector<std::thread> threads;
    for (size_t i = 1; i < shard_count; ++i) {
      threads.emplace_back(run_shard, shards[i].get(), i);
    }
    run_shard(shards[0].get(), 0);
    for (std::thread& t : threads) t.join();
    admin->Stop();
  }
  committer.Stop();
  if (!failed.ok()) return failed;
  std::fprintf(stderr, "volleyd: stopped\n");
  return absl::OkStatus();
}

}  // namespace volley::engine
