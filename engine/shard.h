// shard.h - one delivery shard: take, route, admit, send, record
//
// SYNOPSIS
//   Shard shard(config, place, queue, routes, &ready_jobs, &stop, metrics, &classifier,
//               &credentials);
//   shard.SetDestinationStates(&states);   // for the admin API
//   absl::Status st = shard.Run();          // on its own thread, until stop
//
// DESCRIPTION
//   A shard owns a share of the queue's partitions and runs one io_uring loop
//   (engine/reactor/ring.h) on its thread. One recipient's path through it:
//
//     take    DeliveryWindow::Refill (engine/window.h) takes due recipients of
//             the shard's jobs from the queue, within the window;
//     route   Routing::Route (engine/routing.h): a static route, or the
//             domain's MX plan by DNS, or a verdict (bounce, defer);
//     admit   Shard::Admit: its destination (route + [destination] policy),
//             its retry policy and deadline, the destination's ready list;
//     send    Shard::Dispatch: for each active destination, within its limits
//             (engine/destination_limits.h) and the shard's connection budget,
//             start transactions on idle connections and open new ones
//             (engine/connection.h moves the bytes); Shard::Drain reads what
//             the SMTP client decided;
//     record  Outcomes (engine/outcomes.h): the delivery-log record and the
//             queue change, handed to the committer once per loop turn.
//
//   Invariants ("prepare for disaster"):
//   - A recipient's queue entry is removed or rescheduled only after its outcome
//     line reached the delivery log (the committer writes log, then queue). A
//     crash between the two repeats the outcome on restart; it never loses one.
//     A key stays taken until its unit is written, so it is never taken twice.
//   - A recipient taken is in exactly one place: waiting for its domain's plan,
//     a destination's ready list, a connection's transaction, or finished. The
//     window counts them; nothing is taken beyond it.
//   - A connection is freed (MaybeFree) only when no io_uring operation on it is
//     pending, and only at the end of handling a completion or a timeout.
//
//   Stopping: no new transactions; those under way finish (up to kStopGrace, or
//   at once on a second stop), idle connections QUIT; what was not finished
//   stays queued, and what was decided is committed before Run returns.
//
// BOUNDS
//   place.window recipients; place.connection_budget connections;
//   place.max_message_bytes of rendered messages held by transactions under
//   way (engine/message_bytes.h: a transaction waits for bytes, nothing fails).
#ifndef VOLLEY_ENGINE_SHARD_H_
#define VOLLEY_ENGINE_SHARD_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "dns/resolver.h"
#include "dns/router.h"
#include "dns/routes.h"
#include "engine/admin.h"
#include "engine/boards.h"
#include "engine/compose.h"
#include "engine/config.h"
#include "engine/connection.h"
#include "engine/destination_control.h"
#include "engine/destination_limits.h"
#include "engine/reasons.h"
#include "engine/intake.h"
#include "engine/message_bytes.h"
#include "engine/outcomes.h"
#include "engine/reactor/ring.h"
#include "engine/ready_queue.h"
#include "engine/reload.h"
#include "engine/routing.h"
#include "engine/window.h"
#include "engine/work.h"
#include "metrics/classify.h"
#include "metrics/metrics.h"
#include "queue/queue.h"

namespace volley::engine {

// How long stopping waits for transactions under way before closing anyway.
inline constexpr absl::Duration kStopGrace = absl::Seconds(10);
inline constexpr absl::Duration kTick = absl::Milliseconds(100);
// A retry due before its recipient's deadline and taken less than this after
// its due time still gets its try when the deadline has passed meanwhile.
inline constexpr absl::Duration kLateRetryGrace = absl::Minutes(1);
// After socket() ran out of descriptors, how long no connection opens beyond
// those open then (unless some close): long enough not to retry per turn.
inline constexpr absl::Duration kFdShortTime = absl::Seconds(1);
// While destinations wait for the connection budget, idle connections of
// destinations without work are looked for at most this often.
inline constexpr absl::Duration kIdleReclaimInterval = absl::Milliseconds(100);

// Destination - the domains that share a route and a [destination] policy: one
// pool of connections and one set of limits. Lives as long as the shard.
struct Destination {
  Destination(DestinationLimits l, std::string k) : limits(std::move(l)), key(std::move(k)) {}
  DestinationLimits limits;
  std::string key;  // "ROUTE|POLICY" in Shard::destinations_
  ReadyQueue<Work*> ready;
  std::vector<Conn*> idle;
  int connections = 0;        // open or opening
  int sessions_starting = 0;  // not yet through EHLO
  // Waiting for a message (or connection) token: counted once per wait.
  bool waiting_for_message_token = false;
  bool waiting_for_connection_token = false;
  // In Shard::budget_waiters_: it may open another connection, but the shard's
  // connection budget is spent.
  bool waiting_for_budget = false;
  bool active = false;  // in Shard::active_
  // Its limits are split with other shards' pools for the same key (SiteShares):
  // a site reached by DNS, whose domains other shards may have too, or a static
  // route after a reload changed [routes] (queued recipients keep the partitions
  // the old routes gave them).
  bool shared = false;
  // The backoff level last saved (DestinationControl::SaveBackoff).
  int kept_backoff_level = 0;
  // Its per-destination metrics (volley_destination_deliveries_total).
  metrics::DestinationCounters* counters = nullptr;
  // Whether its route could be reached lately, and why not (engine/reasons.h).
  Reachability reach;
  // The last reply a transaction ended with, for GET /destinations?all=1
  // (classified when the listing is built for a request, not per reply).
  std::optional<smtp::Outcome> last_reply;
  metrics::DeliveryStatus last_status = metrics::DeliveryStatus::kDelivered;
  absl::Time last_reply_at = absl::InfinitePast();
  // Recipients deferred on a server's reply since it was made (volleyd's start,
  // or work coming back after TendDestinations let it go).
  uint64_t deferrals = 0;
  // Since when nothing has been held for or against it (Shard::Forgettable), as
  // the once-a-second walk saw it; InfiniteFuture while something is.
  absl::Time unused_since = absl::InfiniteFuture();
};

class Shard {
 public:
  Shard(const Config& config, ShardPlace place, queue::Queue* queue,
        const dns::StaticRoutes* routes, ReadyJobs* ready_jobs, const std::atomic<bool>* stop,
        metrics::ShardMetrics* metrics, const metrics::Classifier* classifier,
        const Credentials* credentials);
  ~Shard();

  void SetDestinationStates(DestinationStates* states) { destination_states_ = states; }
  // SetReloads - where reloaded configs arrive (engine/reload.h); before Run.
  void SetReloads(ConfigMailbox* reloads) { reloads_ = reloads; }
  absl::Status Run();

 private:
  // --- take (shard.cc)
  void TakeReadyJobs();
  // Withdraw - a paused or cancelled job's recipients waiting in ready lists go
  // back to the queue untouched (paused) or out of it (cancelled); those in a
  // transaction already under way finish it.
  void Withdraw(Job* job);
  void OnTaken(Work* w, const absl::Status& decoded);
  // LetGoIfStopped - w's job is cancelled (w is cancelled) or paused (w goes
  // back to the queue untouched): true when w was let go of.
  bool LetGoIfStopped(Work* w);
  // LetGoIfSuppressed - the suppression list names w's recipient (for its
  // job's From domain): w is finished as suppressed, never sent.
  bool LetGoIfSuppressed(Work* w);
  // --- an operator's suspensions and retries (shard_control.cc)
  // ApplyControl - every loop turn: suspensions that ended, a changed set of
  // them (what waits for a newly suspended domain goes back to the queue), and
  // the retry and release commands waiting for this shard.
  void ApplyControl();
  // LetGoIfSuspended - `domain` is suspended: w goes back to the queue, due
  // when the suspension ends; true then.
  bool LetGoIfSuspended(Work* w, std::string_view domain);
  // MakeDue - what `command` names, queued in this shard's partitions and
  // not taken, due later: due now, attempts unchanged. Returns how many; `more`
  // when it stopped at kMaxRetryScan entries looked at.
  uint64_t MakeDue(const ShardCommand& command, bool* more);
  // KeepBackoff - once a second (TendDestinations): a pool whose level changed is saved
  // (DestinationControl::SaveBackoff).
  void KeepBackoff(Destination* d);
  // --- route and admit (shard.cc)
  void Admit(Work* w, std::string_view domain, const std::shared_ptr<const dns::Route>& route,
             bool by_dns);
  void OnVerdict(Work* w, std::string_view domain, const dns::MxVerdict& verdict);
  // ExpiresUntried - sets w's retry policy and deadline; true when it was taken
  // past the deadline and gets no try (it has been expired).
  bool ExpiresUntried(Work* w, const DestinationPolicy& policy);
  const DestinationPolicy& PolicyFor(std::string_view domain, std::string_view route_name,
                                     std::string_view* name) const;
  Destination* DestinationFor(std::string_view domain,
                              const std::shared_ptr<const dns::Route>& route, bool by_dns);
  void PushReady(Destination* d, Work* w, bool front);
  // Activate - d has work waiting or a backoff to step down: Dispatch visits it
  // until it has neither.
  void Activate(Destination* d) {
    if (d->active) return;
    d->active = true;
    active_.push_back(d);
  }
  // --- send (dispatch.cc)
  void Dispatch();
  void DispatchOne(Destination* d);
  size_t ConnectionBudgetNow() const {
    return now_ < fd_short_until_ ? std::min(place_.connection_budget, fd_short_cap_)
                                  : place_.connection_budget;
  }
  bool BudgetSpent() const { return open_conns_ >= ConnectionBudgetNow(); }
  bool WantsConnection(const Destination& d) const {
    return !stopping_ && d.limits.MayOpen(d.ready.transactions(), d.connections,
                                          d.sessions_starting, now_);
  }
  // WaitForBudget - d may open another connection but the budget is spent: it
  // waits its turn. again: it was served and still wants more (not a new wait).
  void WaitForBudget(Destination* d, bool again = false);
  // ServeBudgetWaiters - the budget freed since the last turn goes to the
  // destinations waiting for it, one connection each per turn, round robin.
  void ServeBudgetWaiters();
  // ReclaimIdleConnections - destinations wait for the budget: idle connections
  // of destinations without work close.
  void ReclaimIdleConnections();
  // QuitIdle - d's idle connections say goodbye (QUIT) and close.
  void QuitIdle(Destination* d);
  // OpenConnection - kNoDescriptor: socket() ran out of file descriptors; d
  // waits for the budget, nothing is deferred. `lease`: the cluster entry the
  // connection holds a place of (engine/destination_limits.h), or null.
  enum class Opened : uint8_t { kYes, kFailed, kNoDescriptor, kWaiting };
  Opened OpenConnection(Destination* d, cluster::Allowance* lease);
  // Connect - a place in the node's cluster connections (a cluster pool), a
  // connection token, then OpenConnection; kWaiting: no place or no token now,
  // the loop wakes when there may be one.
  Opened Connect(Destination* d);
  // AttachCluster - d's limits are the cluster's when its policy's scope is
  // "cluster" and [cluster] is set, its own otherwise (again after a reload).
  void AttachCluster(Destination* d);
  // TendDestinations - once a second, each destination: its backoff's base rate
  // measured and a changed level saved (KeepBackoff); one that has been
  // Forgettable for [delivery] forget_idle_destinations_after is let go, so that
  // the shard holds the destinations of recent work, not every one it has seen.
  void TendDestinations();
  // Forgettable - nothing waits for d or is under way there, and its limits
  // are Settled: DestinationFor would make it again as it is.
  bool Forgettable(Destination* d) const;
  // AdoptClusterBackoff - once a second: each cluster pool takes a higher
  // backoff level the cluster agreed.
  void AdoptClusterBackoff();
  // WaitForToken - d has work but no token under its message (or connection)
  // rate: the loop wakes when the next one is there.
  void WaitForToken(Destination* d, bool messages);
  // --- the bound on message bytes in flight (dispatch.cc, engine/message_bytes.h)
  // MayStartMessage - d's next transaction may start as far as message bytes
  // go: nobody waits ahead of d, and its job's largest message so far fits.
  bool MayStartMessage(Destination* d) const;
  // WaitForBytes - d has work and an idle connection, but its next message
  // must wait for bytes: it joins the line, leaves active_ (ServeBytesWaiters
  // brings it back) and opens no connection meanwhile.
  void WaitForBytes(Destination* d);
  // ChargeMessage - c's transaction of `job`, composed as `size` bytes, holds
  // them; false (nothing held) when they do not fit now.
  bool ChargeMessage(Conn* c, Job* job, uint64_t size);
  // ReleaseMessage - a transaction holding `size` bytes ended (or never
  // started): they are given back.
  void ReleaseMessage(uint64_t size);
  // ServeBytesWaiters - the head of the line starts while its message fits;
  // one with nothing to start leaves the line.
  void ServeBytesWaiters();
  // --- the connections' events (shard.cc)
  // HandleCompletions - each operation's handler, registered with the ring.
  void HandleCompletions();
  void OnConnectionIo(const reactor::Completion& done);
  // Arrived - a completion is handled: the wait may have lasted a tick, and
  // outcomes and deadlines need the time it arrived, not when the wait began.
  void Arrived() {
    if (clock_read_) return;
    now_ = absl::Now();
    clock_read_ = true;
  }
  // Drain - act on what c's client decided (session ready, transaction done,
  // session closed), then send what it wrote.
  void Drain(Conn* c);
  void OnTransactionDone(Conn* c, const smtp::TransactionDone& done);
  void OnSessionClosed(Conn* c, const smtp::SessionClosed& closed);
  // AssignNext - c is idle: its next transaction, or idle, or goodbye. Then,
  // while its client accepts another behind the one under way
  // (max_transactions_in_flight), more of the destination's ready work.
  void AssignNext(Conn* c);
  // StartNext - the next transaction of c's destination on c; false when none
  // could start (no token, no bytes, the client refused). An idle c then waits
  // in the destination's idle list (`idle`), a busy one simply carries on.
  bool StartNext(Conn* c, bool idle);
  // TakesMoreWork - c may be given another transaction, `messages` counting
  // those it finished and has under way: not stopping, under its destination's
  // limits (KeepsConnection), and, while others wait for the connection budget,
  // not over the destination's fair share of it.
  bool TakesMoreWork(const Conn* c, int messages) const;
  void OnDeadline(Conn* c);
  void CloseConn(Conn* c);
  void MaybeFree(Conn* c);
  // --- record (shard.cc): what the destination learns from a reply first
  AttemptPlace PlaceOf(const Destination* d, const Conn* c) const;
  // Defer - returns when w is tried again (InfiniteFuture: it expired or bounced).
  absl::Time Defer(Work* w, const smtp::Outcome& o, Destination* d, const Conn* c);
  // FailDestination - defer everything waiting for `d`; `c` the connection whose
  // failure it was, when there was one. Returns the earliest next try of those
  // (InfiniteFuture: none waited).
  absl::Time FailDestination(Destination* d, const smtp::Outcome& why, const Conn* c = nullptr);
  // ApplyBackoffRule - a server's reply at `d` whose class has a [[backoff]]
  // rule; true when the recipient was dealt with (bounced). A reply that
  // concerns the recipient alone (ScopeOf, engine/reasons.h) moves no backoff.
  bool ApplyBackoffRule(Work* w, const smtp::Outcome& o, Destination* d, const Conn* c);
  // Unreachable - no host of d's route is left after c failed before its
  // session got going: d's reachability, logged once per change.
  void Unreachable(Destination* d, const Conn* c, const smtp::Outcome& why, absl::Time next_try);
  // --- metrics and the admin API's view (shard_metrics.cc)
  void CountReplies(Conn* c);
  // PublishLoopMetrics - at the end of a loop turn: gauges, busy time, DNS counts;
  // once a second backoff rates, levels and site shares; the destinations'
  // states when the admin API has asked for them (DestinationStates::Asked).
  void PublishLoopMetrics(absl::Time turn_started);
  void PublishDestinationStates();  // GET /destinations's entries, then ?all=1's
  void PublishAllDestinations();
  void ReportSites();
  // PublishDestinationLevels - each destination's ready recipients, connections
  // and backoff level into its metrics (volley_destination_*), once a second.
  void PublishDestinationLevels();
  // --- the loop (shard.cc)
  absl::Duration NextWait() const;
  void PostCommitRead();
  void PostIntakeRead();
  void PostReloadRead();
  // ApplyConfig - a reload's generation, at a loop turn: the [destination]
  // policies, routes, [[backoff]] and [[classify]] rules and the [[dkim]] keys
  // from now on. Nothing
  // under way is cut: a recipient already routed keeps its destination and
  // retry rule, a connection over a lowered max_connections closes when idle
  // (QUIT) or after its transaction, a new rate applies to the next token.
  void ApplyConfig(std::shared_ptr<const LiveConfig> live);

  const Config& config_;
  // What a reload changes is read through live_: config_ until the first
  // reload, then the newest generation. Every generation applied is kept
  // (generations_): recipients and connections made under one point into it.
  const Config* live_;
  std::vector<std::shared_ptr<const LiveConfig>> generations_;
  ConfigMailbox* reloads_ = nullptr;
  uint64_t reload_counter_ = 0;
  // A reload changed [routes]: static routes' pools are shared like DNS sites'.
  bool routes_changed_ = false;
  const ShardPlace place_;
  queue::Queue* queue_;
  const metrics::Classifier* classifier_;
  ReadyJobs* ready_jobs_;
  const std::atomic<bool>* stop_;
  metrics::ShardMetrics* metrics_;
  std::mt19937_64 rng_;
  absl::Time now_;
  Composer composer_;  // renders and signs; this shard's own signers
  DeliveryWindow window_;
  Outcomes outcomes_;
  // Keyed by the route's name and the policy's ("ROUTE|POLICY"): domains that
  // share a route and a policy share a pool.
  absl::flat_hash_map<std::string, std::unique_ptr<Destination>> destinations_;
  std::string destination_key_;  // DestinationFor's scratch
  // config_.destinations by name (looked up for every recipient taken).
  absl::flat_hash_map<std::string, const DestinationPolicy*> policies_;
  std::vector<SourceChoice> source_choices_;  // config_.sources, for PickSource
  // Declared before the ring, so that the ring is destroyed first: tearing it
  // down cancels the operations still pointing into connections' buffers.
  Connections connections_;
  reactor::Ring ring_;
  // After the ring (destroyed before it, closing the resolver's sockets while
  // the ring still holds their polls).
  Routing routing_;
  // The router's and resolver's counts already added to metrics_ (deltas).
  dns::Router::Stats dns_counted_;
  dns::Resolver::Stats resolver_counted_;
  // [delivery] max_message_bytes_in_flight: this shard's share, and who waits for it.
  MessageBytes<Destination*> message_bytes_;
  uint64_t largest_message_ = 0;  // of any job this shard composed
  // The earliest time a destination waiting for a rate token gets one.
  absl::Time shaping_wake_ = absl::InfiniteFuture();
  DestinationStates* destination_states_ = nullptr;
  uint64_t states_answered_ = 0;  // the admin API's ticket last answered
  absl::Time last_states_ = absl::InfinitePast();
  size_t open_conns_ = 0;
  // Destinations waiting for the connection budget, in the order they came
  // (each once: Destination::waiting_for_budget).
  std::deque<Destination*> budget_waiters_;
  // Destinations Dispatch visits (Destination::active): those with work waiting
  // or a backoff level to step down. At 10,000 destinations a walk over all of
  // them every loop turn was most of the loop (bench/RESULTS.md).
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
  uint64_t intake_counter_ = 0;
  uint64_t commit_counter_ = 0;
  // Transactions are named for the delivery log's txn (Conn::txn) by this
  // prefix (this run's start and the shard: TransactionPrefix) and a count.
  std::string txn_prefix_;
  uint64_t transactions_started_ = 0;
  // ring_.out_of_buffers() as last added to the metrics.
  uint64_t out_of_buffers_counted_ = 0;
  bool stopping_ = false;
  bool clock_read_ = false;  // this turn's completions read the clock
  bool suppression_error_logged_ = false;  // the list failed to read: said once
  // The suspensions as last read (DestinationControl::Snapshot), and the
  // generation read.
  std::shared_ptr<const DestinationControl::Suspensions> suspended_;
  uint64_t control_generation_ = 0;
  // Commands taken and not yet run: they wait until the outcomes are written
  // (Outcomes::Settled), so that a recipient just held is in the queue where
  // a release looks for it.
  std::deque<ShardCommand> commands_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_SHARD_H_
