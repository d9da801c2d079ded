#include "engine/shard.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/committer.h"
#include "engine/reactor/tag.h"
#include "queue/job.h"

namespace volley::engine {
namespace {

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

// TransactionPrefix - "<start>.<shard>." where start is the shard's start in
// milliseconds since the epoch, base 36: with a count after it, a name no
// other transaction in the delivery log has, from this shard, another, or a
// volleyd before or after this one (which starts at least a millisecond apart).
std::string TransactionPrefix(absl::Time start, size_t shard) {
  constexpr std::string_view kDigits = "0123456789abcdefghijklmnopqrstuvwxyz";
  uint64_t ms = static_cast<uint64_t>(std::max<int64_t>(absl::ToUnixMillis(start), 0));
  std::string digits;
  do {
    digits.push_back(kDigits[ms % 36]);
    ms /= 36;
  } while (ms != 0);
  std::reverse(digits.begin(), digits.end());
  return absl::StrCat(digits, ".", shard, ".");
}

}  // namespace

Shard::Shard(const Config& config, ShardPlace place, queue::Queue* queue,
             const dns::StaticRoutes* routes, ReadyJobs* ready_jobs,
             const std::atomic<bool>* stop, metrics::ShardMetrics* metrics,
             const metrics::Classifier* classifier, const Credentials* credentials)
    : config_(config),
      live_(&config),
      place_(place),
      queue_(queue),
      classifier_(classifier),
      ready_jobs_(ready_jobs),
      stop_(stop),
      metrics_(metrics),
      rng_(std::random_device{}()),
      now_(absl::Now()),
      composer_(*credentials),
      window_(place, queue, &composer_),
      outcomes_(config, place, queue, classifier, metrics, &window_, &rng_, &now_),
      connections_(config, &ring_, metrics),
      routing_(config, routes, &ring_, &rng_, &now_,
               Routing::Callbacks{
                   [this](Work* w, std::string_view domain,
                          const std::shared_ptr<const dns::Route>& route,
                          bool by_dns) { Admit(w, domain, route, by_dns); },
                   [this](Work* w, std::string_view domain, const dns::MxVerdict& verdict) {
                     OnVerdict(w, domain, verdict);
                   }}),
      message_bytes_(place.max_message_bytes) {
  metrics_->message_bytes_limit.Set(static_cast<int64_t>(place.max_message_bytes));
  txn_prefix_ = TransactionPrefix(now_, place_.index);
  for (const auto& [name, policy] : config_.destinations) policies_.emplace(name, &policy);
  for (size_t i = 0; i < config_.sources.size(); ++i) {
    source_choices_.push_back(SourceChoice{
        connections_.source_addresses()[i].addr.ss_family, config_.sources[i].weight});
  }
}

Shard::~Shard() = default;

// --- take

void Shard::TakeReadyJobs() {
  for (const std::string& id : ready_jobs_->TakeAll(place_.index)) {
    auto record = queue_->FindJob(id);
    absl::Status st = record.ok() ? absl::OkStatus() : record.status();
    if (st.ok() && record->has_value()) {
      absl::StatusOr<Job*> changed = window_.Load(**record);
      st = changed.status();
      if (changed.ok() && *changed != nullptr) Withdraw(*changed);
    }
    if (!st.ok()) base::LogInfo("%s", base::StdSv(st.message()));
  }
}

void Shard::Withdraw(Job* job) {
  for (auto& [key, d] : destinations_) {
    for (Work* w : d->ready.TakeAll()) {
      if (w->job == job && LetGoIfStopped(w)) continue;
      PushReady(d.get(), w, /*front=*/false);
    }
  }
}

bool Shard::LetGoIfStopped(Work* w) {
  if (w->job->cancelled()) {
    outcomes_.Cancel(w);
    return true;
  }
  if (w->job->record.paused) {
    outcomes_.Release(w);  // still queued, at its key: taken again after the resume
    return true;
  }
  return false;
}

void Shard::OnTaken(Work* w, const absl::Status& decoded) {
  if (!decoded.ok()) {
    // Its address cannot be trusted, so nothing is sent: the entry is bounced
    // (the log names its job and line, which point into accepted/) instead of
    // being scanned again forever and holding its job open.
    base::LogInfo("job \"%s\" line %u: corrupt queue entry (%s); bounced", w->job->record.id,
                  w->entry.line, base::StdSv(decoded.message()));
    outcomes_.Finish(w, queue::Final::kBounced,
                     MakeOutcome(smtp::Outcome::Kind::kPermanent, 0, "5.3.0",
                                 absl::StrCat("queue entry corrupt: ", decoded.message(),
                                              "; see line ", w->entry.line, " of the job file")),
                     AttemptPlace{});
    return;
  }
  if (w->job->cancelled()) {
    outcomes_.Cancel(w);
    return;
  }
  if (LetGoIfSuppressed(w)) return;
  if (suspended_ != nullptr && !suspended_->empty() &&
      LetGoIfSuspended(w, absl::AsciiStrToLower(base::Sv(queue::DomainOf(w->rcpt.to))))) {
    return;
  }
  routing_.Route(w);
}

bool Shard::LetGoIfSuppressed(Work* w) {
  if (place_.suppressions == nullptr) return false;
  absl::StatusOr<std::optional<queue::Suppression>> hit =
      place_.suppressions->Check(w->rcpt.to, w->job->from_domain, now_);
  if (!hit.ok()) {
    // The list could not be read: sending is what volleyd did before the
    // entry existed, and the intake check caught what was listed then. Said
    // once per burst, not per recipient.
    if (!suppression_error_logged_) {
      base::LogWarning("suppression list: %s (recipients are sent without the check until "
                       "it reads again)",
                       base::StdSv(hit.status().message()));
      suppression_error_logged_ = true;
    }
    return false;
  }
  suppression_error_logged_ = false;
  if (!hit->has_value()) return false;
  const queue::Suppression& entry = **hit;
  outcomes_.Suppress(w, absl::StrCat("suppressed: ", base::Sv(queue::SuppressionReasonName(entry.reason)),
                                     " (", entry.source, ")"));
  return true;
}

// --- route and admit

void Shard::Admit(Work* w, std::string_view domain,
                  const std::shared_ptr<const dns::Route>& route, bool by_dns) {
  if (LetGoIfStopped(w)) return;  // paused or cancelled while its domain was looked up
  if (LetGoIfSuspended(w, domain)) return;  // suspended meanwhile
  Destination* d = DestinationFor(domain, route, by_dns);
  if (ExpiresUntried(w, d->limits.policy())) return;
  PushReady(d, w, /*front=*/false);
}

Destination* Shard::DestinationFor(std::string_view domain,
                                   const std::shared_ptr<const dns::Route>& route, bool by_dns) {
  std::string_view policy_name;
  const DestinationPolicy& policy = PolicyFor(domain, route->name, &policy_name);
  // Every recipient comes this way: the key is built in a buffer kept for it,
  // and copied only for a destination seen the first time.
  std::string& key = destination_key_;
  key.assign(route->name).append("|").append(policy_name);
  auto found = destinations_.find(base::Sv(key));
  if (found == destinations_.end()) found = destinations_.try_emplace(key).first;
  std::unique_ptr<Destination>& d = found->second;
  if (!d) {
    // A static route is whole on this shard (its domains share a partition)
    // until a reload changes [routes].
    const bool shared = (by_dns || routes_changed_) && place_.sites != nullptr;
    const int sharing = shared ? place_.sites->Join(key, place_.index) : 1;
    d = std::make_unique<Destination>(
        DestinationLimits(&policy, policy_name.empty() ? route->name : key, sharing), key);
    d->shared = shared;
    AttachCluster(d.get());
    // A level the cluster agreed while this node had no pool for it (never made, or
    // let go idle) applies from the first message, not from the next second's walk.
    if (d->limits.AdoptClusterBackoff(now_)) Activate(d.get());
    // Looked up once: the name (route or site) stays with the destination.
    d->counters = &metrics_->Destination(route->name);
    // A level kept from before a restart (engine/destination_control.h).
    if (place_.control != nullptr) {
      if (std::optional<KeptBackoff> kept = place_.control->KeptBackoffFor(key)) {
        d->limits.RestoreBackoff(kept->level, kept->step_at, kept->period, kept->reason);
        d->kept_backoff_level = d->limits.backoff_level();
        Activate(d.get());  // so that its level steps down when due
      }
    }
  }
  d->limits.SetRoute(route);
  return d.get();
}

void Shard::AttachCluster(Destination* d) {
  const bool cluster = place_.cluster != nullptr &&
                       d->limits.policy().scope == DestinationPolicy::Scope::kCluster;
  cluster::Allowance* allowance = cluster ? place_.cluster->Join(d->key) : nullptr;
  if (allowance == d->limits.allowance()) return;
  d->limits.SetCluster(allowance, place_.cluster, place_.node);
}

void Shard::TendDestinations() {
  const absl::Duration forget_after = config_.delivery.forget_idle_destinations_after;
  for (auto it = destinations_.begin(); it != destinations_.end();) {
    Destination* d = it->second.get();
    d->limits.MeasureBase();
    KeepBackoff(d);
    if (!Forgettable(d)) {
      d->unused_since = absl::InfiniteFuture();
    } else if (d->unused_since == absl::InfiniteFuture()) {
      d->unused_since = now_;
    } else if (now_ - d->unused_since >= forget_after) {
      // Its share of a site and its cluster allowance need no goodbye: an idle
      // pool is no longer reported to SiteShares, and Allowances keeps the entry.
      destinations_.erase(it++);
      continue;
    }
    ++it;
  }
}

bool Shard::Forgettable(Destination* d) const {
  return d->ready.empty() && d->connections == 0 && d->sessions_starting == 0 &&
         d->idle.empty() && !d->active && !d->waiting_for_budget &&
         !d->waiting_for_message_token && !d->waiting_for_connection_token &&
         !message_bytes_.waiting(d) && d->kept_backoff_level == 0 && d->limits.Settled(now_);
}

void Shard::OnVerdict(Work* w, std::string_view domain, const dns::MxVerdict& verdict) {
  if (LetGoIfStopped(w)) return;
  if (LetGoIfSuspended(w, domain)) return;  // no attempt counted against it
  std::string_view policy_name;
  if (ExpiresUntried(w, PolicyFor(domain, "", &policy_name))) return;
  // No connection was made: no reply code, the verdict's enhanced code (RFC
  // 3463) and reason. A permanent verdict (Null MX, NXDOMAIN) bounces at once.
  const smtp::Outcome why = MakeOutcome(
      verdict.permanent ? smtp::Outcome::Kind::kPermanent : smtp::Outcome::Kind::kTransient, 0,
      verdict.enhanced, verdict.reason);
  if (verdict.local) {
    outcomes_.Postpone(w, why);
  } else if (verdict.permanent) {
    outcomes_.Finish(w, queue::Final::kBounced, why, AttemptPlace{});
  } else {
    outcomes_.Defer(w, why, AttemptPlace{});
  }
}

bool Shard::ExpiresUntried(Work* w, const DestinationPolicy& policy) {
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
                                now_ - w->entry.due < kLateRetryGrace);
  if (now_ >= w->deadline && !last_try) {
    outcomes_.Expire(w);
    return true;
  }
  return false;
}

// PolicyFor - the [destination] entry for the recipient's domain (lower case,
// as Routing hands it on), else for the route, else [smtp]'s defaults; *name views
// the entry's name (domain or route_name; empty for the defaults).
const DestinationPolicy& Shard::PolicyFor(std::string_view domain, std::string_view route_name,
                                          std::string_view* name) const {
  for (const std::string_view key : {domain, route_name}) {
    if (key.empty()) continue;
    if (auto it = policies_.find(base::Sv(key)); it != policies_.end()) {
      *name = key;
      return *it->second;
    }
  }
  *name = {};
  return live_->smtp.defaults;
}

void Shard::PushReady(Destination* d, Work* w, bool front) {
  Activate(d);
  std::string group = absl::StrCat(w->job->record.job_no);
  size_t limit = 1;
  if (w->job->shared_message) {
    absl::StrAppend(&group, "/", absl::AsciiStrToLower(base::Sv(queue::DomainOf(w->rcpt.to))));
    limit = static_cast<size_t>(d->limits.policy().max_recipients_per_transaction);
  }
  if (front) {
    d->ready.PushFront(group, limit, w, w->job->header.priority);
  } else {
    d->ready.Push(group, limit, w, w->job->header.priority);
  }
}

// --- the connections' events

void Shard::HandleCompletions() {
  // Every operation the shard submits has its handler: a completion of any
  // other is the reactor's to report (engine/reactor/ring.h).
  ring_.Handle(kOpDnsPoll, [this](const reactor::Completion& done) {
    Arrived();
    routing_.OnPoll(done.tag, done.result);
  });
  ring_.Handle(kOpDnsPollRemove, [](const reactor::Completion&) {});
  ring_.Handle(kOpCommitDone, [this](const reactor::Completion&) {
    Arrived();
    outcomes_.OnCommitDone();
    PostCommitRead();
  });
  ring_.Handle(kOpIntakeEvent, [this](const reactor::Completion& done) {
    Arrived();
    TakeReadyJobs();
    if (done.result < 0 && done.result != -EINTR && done.result != -EAGAIN) {
      // Reading the eventfd failed: do not spin on it. Refill looks in the
      // mailbox every turn anyway; this read only makes new jobs start sooner.
      base::LogInfo("intake wake-up read failed: %s; polling instead",
                    std::strerror(-done.result));
      return;
    }
    PostIntakeRead();
  });
  ring_.Handle(kOpConfigReload, [this](const reactor::Completion& done) {
    Arrived();
    // Only the newest matters: each is whole, not a change to the one before.
    std::vector<std::shared_ptr<const LiveConfig>> waiting = reloads_->TakeAll();
    if (!waiting.empty()) ApplyConfig(std::move(waiting.back()));
    if (done.result < 0 && done.result != -EINTR && done.result != -EAGAIN) {
      base::LogError("shard %zu: reload wake-up read failed: %s; reloads reach this shard no "
                     "more until restart",
                     place_.index, std::strerror(-done.result));
      return;
    }
    PostReloadRead();
  });
  for (const Op op : {kOpConnect, kOpSend, kOpRecv}) {
    ring_.Handle(op, [this](const reactor::Completion& done) {
      Arrived();
      OnConnectionIo(done);
    });
  }
}

void Shard::OnConnectionIo(const reactor::Completion& done) {
  Conn* c = connections_.Find(done.tag);
  if (c == nullptr) {  // stale: its connection is gone
    ring_.ReturnBuffer(done);
    return;
  }
  connections_.OnIo(c, done, now_);
  if (!c->closing) Drain(c);
  MaybeFree(c);
}

void Shard::Drain(Conn* c) {
  for (;;) {
    smtp::Event ev = c->client->Next();
    if (std::holds_alternative<smtp::NeedData>(ev)) break;
    if (std::holds_alternative<smtp::StartTls>(ev)) {
      connections_.StartTls(c);
    } else if (std::holds_alternative<smtp::SessionReady>(ev)) {
      c->session_ready = true;
      --c->dest->sessions_starting;
      c->dest->limits.SetSessionDepth(c->client->max_in_flight());
      if (c->dest->reach.OnConnected()) {
        base::LogInfo("destination %s: reachable again (%s)", c->dest->limits.route()->name,
                      c->Host().name);
      }
      AssignNext(c);
    } else if (auto* done = std::get_if<smtp::TransactionDone>(&ev)) {
      OnTransactionDone(c, *done);
    } else if (auto* closed = std::get_if<smtp::SessionClosed>(&ev)) {
      OnSessionClosed(c, *closed);
      return;
    }
  }
  CountReplies(c);
  connections_.Kick(c, now_);
}

void Shard::OnTransactionDone(Conn* c, const smtp::TransactionDone& done) {
  VOLLEY_CHECK(!c->transactions.empty(), "a transaction result with none under way");
  // The client ends transactions in the order they were started.
  ConnTransaction& front = c->transactions.front();
  metrics_->transaction_seconds.Observe(absl::ToDoubleSeconds(now_ - front.started));
  ReleaseMessage(front.message_bytes);
  std::vector<Work*> works = std::move(front.works);
  c->txn = std::move(front.txn);
  c->transactions.pop_front();
  VOLLEY_CHECK(!works.empty() && done.rcpt_outcomes.size() == works.size() &&
                   done.id == works.front()->entry.line,
               "a transaction result that does not match its recipients");
  const bool any_accepted =
      std::any_of(done.rcpt_outcomes.begin(), done.rcpt_outcomes.end(),
                  [](const smtp::Outcome& o) { return o.kind == smtp::Outcome::Kind::kAccepted; });
  std::vector<Work*> next_transaction;
  for (size_t i = 0; i < works.size(); ++i) {
    Work* w = works[i];
    const smtp::Outcome& o = done.rcpt_outcomes[i];
    switch (FateOf(o, any_accepted)) {
      case RcptFate::kDelivered:
        outcomes_.Finish(w, queue::Final::kDelivered, o, PlaceOf(c->dest, c));
        break;
      case RcptFate::kBounced:
        outcomes_.Finish(w, queue::Final::kBounced, o, PlaceOf(c->dest, c));
        break;
      case RcptFate::kDeferred:
        ++c->dest->deferrals;
        Defer(w, o, c->dest, c);
        break;
      case RcptFate::kNextTransaction: next_transaction.push_back(w); break;
    }
  }
  // What GET /destinations?all=1 shows as the destination's last reply: the
  // transaction's last recipient's, the one an operator would see in the log.
  for (size_t i = works.size(); i-- > 0;) {
    const RcptFate fate = FateOf(done.rcpt_outcomes[i], any_accepted);
    if (fate == RcptFate::kNextTransaction) continue;
    c->dest->last_reply = done.rcpt_outcomes[i];
    c->dest->last_status = fate == RcptFate::kDelivered  ? metrics::DeliveryStatus::kDelivered
                           : fate == RcptFate::kBounced ? metrics::DeliveryStatus::kBounced
                                                        : metrics::DeliveryStatus::kDeferred;
    c->dest->last_reply_at = now_;
    break;
  }
  // Pushed to the front in reverse, so they keep their order.
  for (auto it = next_transaction.rbegin(); it != next_transaction.rend(); ++it) {
    PushReady(c->dest, *it, /*front=*/true);
  }
  ++c->messages;
  c->txn.clear();  // its records are made: what comes next is no part of it
  AssignNext(c);
}

void Shard::OnSessionClosed(Conn* c, const smtp::SessionClosed& closed) {
  Destination* d = c->dest;
  if (c->tls && !c->tls->established() && d->limits.policy().tls == TlsMode::kOpportunistic) {
    // The handshake failed (an error, the server hanging up, a timeout). RFC
    // 3207 section 4.1 lets the client carry on without TLS; a server whose
    // handshake fails would fail the next one too, so plaintext for a while.
    d->limits.FallBackToPlaintext(now_ + live_->smtp.tls_fallback_time);
    c->tls_fell_back = true;
  }
  if (!c->session_ready) {
    --d->sessions_starting;
    const bool failed = closed.reason.kind != smtp::Outcome::Kind::kAccepted;
    if (failed) metrics_->connections_failed[static_cast<size_t>(FailureOf(closed.reason))].Add();
    if (failed && !c->tls_fell_back) {
      // The host could not be reached or refused the session (a 421 or 554
      // greeting, EHLO refused, TLS it must have missing): the next host is
      // tried, as for MX hosts (RFC 5321 section 5.1). When none is left, what
      // waits would meet the same fate, so it is deferred now rather than left
      // to spin.
      d->limits.MarkHostDown(c->Host().name, now_);
      if (!d->limits.AnyHostUp(now_)) {
        Unreachable(d, c, closed.reason, FailDestination(d, closed.reason, c));
      }
    }
  }
  CountReplies(c);
  CloseConn(c);
}

void Shard::AssignNext(Conn* c) {
  Destination* d = c->dest;
  if (c->client->idle()) {
    if (!TakesMoreWork(c, c->messages) || (!budget_waiters_.empty() && d->ready.empty())) {
      // Also: others wait for the connection budget while this destination has
      // no work for the connection: this one goes.
      c->client->Quit();
      return;
    }
    if (d->ready.empty()) {
      d->idle.push_back(c);
      return;
    }
    if (!StartNext(c, /*idle=*/true)) return;
  }
  // Pipelined behind the transaction under way, while the client takes more
  // (max_transactions_in_flight) and the connection would take them when idle.
  // A session that just ended (TransactionDone comes before SessionClosed) or
  // is saying goodbye accepts none.
  while (!d->ready.empty() && c->client->accepts_transaction() &&
         TakesMoreWork(c, c->messages + static_cast<int>(c->transactions.size()))) {
    if (!StartNext(c, /*idle=*/false)) break;
    metrics_->transactions_pipelined.Add();
  }
}

bool Shard::TakesMoreWork(const Conn* c, int messages) const {
  const Destination* d = c->dest;
  return !stopping_ && d->limits.KeepsConnection(messages, d->connections, now_) &&
         (budget_waiters_.empty() || static_cast<size_t>(d->connections) <= fair_share_);
}

bool Shard::StartNext(Conn* c, bool idle) {
  Destination* d = c->dest;
  if (!MayStartMessage(d)) {
    // The shard's connections hold all the message bytes they may: an idle
    // one waits until its destination's turn (ServeBytesWaiters).
    if (idle) {
      d->idle.push_back(c);
      WaitForBytes(d);
    }
    return false;
  }
  if (!c->token_taken) {
    if (!d->limits.TakeMessageToken(now_)) {
      // Over the destination's message rate: wait idle for the next token.
      if (idle) {
        d->idle.push_back(c);
        WaitForToken(d, /*messages=*/true);
      }
      return false;
    }
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
                    c->client->caps(), &env, c->client->content_form());
  if (!job->plan->sign_error.empty() && !job->plan->sign_error_logged) {
    job->plan->sign_error_logged = true;
    base::LogInfo("job \"%s\": sent without a DKIM signature: %s", job->record.id,
                  job->plan->sign_error);
  }
  const uint64_t size = env.content.size();
  if (!ChargeMessage(c, job, size)) {
    // Larger than the job's messages before it, and more than the bound has
    // left: the work goes back first in line and is composed again when its
    // turn comes; the connection keeps its message token for then.
    for (auto it = works.rbegin(); it != works.rend(); ++it) PushReady(d, *it, /*front=*/true);
    c->token_taken = true;
    if (idle) {
      d->idle.push_back(c);
      WaitForBytes(d);
    }
    return false;
  }
  if (absl::Status st = c->client->StartTransaction(std::move(env)); !st.ok()) {
    // The client refused (e.g. bytes arrived on the idle connection, which ends
    // the session as a protocol error): the work goes back first in line for
    // another connection, untouched.
    ReleaseMessage(size);
    for (auto it = works.rbegin(); it != works.rend(); ++it) PushReady(d, *it, /*front=*/true);
    return false;
  }
  ConnTransaction& t = c->transactions.emplace_back();
  t.works = std::move(works);
  t.message_bytes = size;
  t.started = now_;
  t.txn.assign(txn_prefix_);
  absl::StrAppend(&t.txn, ++transactions_started_);
  return true;
}

void Shard::OnDeadline(Conn* c) {
  if (c->client->waiting_for() == smtp::Wait::kNone && c->transactions.empty()) {
    // Idle too long: say goodbye.
    auto& idle = c->dest->idle;
    idle.erase(std::remove(idle.begin(), idle.end(), c), idle.end());
    c->client->Quit();
    connections_.Kick(c, now_);
    return;
  }
  c->client->FeedTimeout();
  Drain(c);
  MaybeFree(c);
}

void Shard::CloseConn(Conn* c) {
  if (c->closing) return;
  auto& idle = c->dest->idle;
  idle.erase(std::remove(idle.begin(), idle.end(), c), idle.end());
  connections_.Close(c);
}

void Shard::MaybeFree(Conn* c) {
  if (!Connections::Freeable(*c)) return;
  Destination* d = c->dest;
  // Whatever ended it (refused, failed to connect, timed out, QUIT), its place
  // in the node's cluster connections goes back: a place kept here would be
  // one less for the destination until restart.
  if (c->lease != nullptr) c->lease->Closed();
  connections_.Free(c);  // c is gone from here on
  --d->connections;
  --open_conns_;
  metrics_->connections_open.Set(static_cast<int64_t>(open_conns_));
}

// --- the loop

void Shard::PostCommitRead() {
  ring_.PrepRead(place_.committer->event_fd(place_.index), &commit_counter_,
                 sizeof commit_counter_, reactor::MakeTag(0, 0, kOpCommitDone));
}

void Shard::PostIntakeRead() {
  ring_.PrepRead(ready_jobs_->event_fd(place_.index), &intake_counter_, sizeof intake_counter_,
                 reactor::MakeTag(0, 0, kOpIntakeEvent));
}

void Shard::PostReloadRead() {
  ring_.PrepRead(reloads_->event_fd(), &reload_counter_, sizeof reload_counter_,
                 reactor::MakeTag(0, 0, kOpConfigReload));
}

void Shard::ApplyConfig(std::shared_ptr<const LiveConfig> live) {
  live_ = &live->config;
  routes_changed_ = routes_changed_ || live->routes_changed;
  policies_.clear();
  for (const auto& [name, policy] : live_->destinations) policies_.emplace(name, &policy);
  routing_.SetRoutes(live->routes.get());
  classifier_ = live->classifier.get();
  outcomes_.SetClassifier(classifier_);
  // The reload's DKIM keys: each job's next message is signed with them (its
  // plan is re-planned in Compose); messages already composed keep theirs.
  if (live->credentials != nullptr) composer_.SetCredentials(*live->credentials);
  for (auto& [key, d] : destinations_) {
    // The key is "ROUTE|POLICY": a policy the new file no longer names gives
    // way to the defaults, as it would for a recipient routed now.
    const std::string policy_name = key.substr(key.rfind('|') + 1);
    auto it = policy_name.empty() ? policies_.end() : policies_.find(policy_name);
    d->limits.SetPolicy(it != policies_.end() ? it->second : &live_->smtp.defaults);
    AttachCluster(d.get());  // its scope may have changed
    // Connections over a lowered limit: idle ones say goodbye now, busy ones
    // after their transaction (KeepsConnection).
    const int surplus = d->connections - d->limits.MaxConnections();
    for (int i = 0; i < surplus && !d->idle.empty(); ++i) {
      Conn* c = d->idle.back();
      d->idle.pop_back();
      c->client->Quit();
      connections_.Kick(c, now_);
    }
    if (routes_changed_ && !d->shared && place_.sites != nullptr) {
      d->shared = true;
      d->limits.SetSharing(place_.sites->Join(key, place_.index));
    }
    Activate(d.get());  // a raised limit or rate may let more go out now
  }
  generations_.push_back(std::move(live));
}

// NextWait - until a completion or the tick, but no longer than the next
// refill when more is due (an idle pool must not wait a whole tick for work
// that is already due), a rate token, c-ares's next timeout, or the next
// connection deadline (at least 1 ms on: one that passed and was handled
// without moving must not spin the loop).
absl::Duration Shard::NextWait() const {
  absl::Duration wait = kTick;
  const auto at_least_1ms = [&](absl::Time t) { return std::max(absl::Milliseconds(1), t - now_); };
  if (absl::Time refill = window_.NextRefillSoon(); refill != absl::InfiniteFuture()) {
    wait = at_least_1ms(refill);
  }
  if (shaping_wake_ != absl::InfiniteFuture()) wait = std::min(wait, at_least_1ms(shaping_wake_));
  if (std::optional<absl::Duration> dns_due = routing_.NextTimeout()) {
    wait = std::min(wait, std::max(*dns_due, absl::ZeroDuration()));
  }
  if (std::optional<absl::Time> deadline = connections_.EarliestDeadline()) {
    wait = std::min(wait, at_least_1ms(*deadline));
  }
  return wait;
}

absl::Status Shard::Run() {
  reactor::RingOptions ring_options;
  // Each connection has a receive and a send in flight at most: room for all
  // of them completing at once, and the resolver's polls and the eventfds.
  ring_options.cq_entries = std::clamp<unsigned>(
      std::bit_ceil(static_cast<unsigned>(2 * place_.connection_budget + 256)), 8192, 65536);
  ring_options.recv_buffers = std::bit_ceil(static_cast<unsigned>(config_.delivery.receive_buffers));
  ring_options.recv_buffer_size = kRecvBufferSize;
  RETURN_IF_ERROR(ring_.Init(ring_options));
  // From here the admin API's requests for listings wait for this shard's
  // answer, and no longer once it has stopped, however it stops.
  if (destination_states_ != nullptr) destination_states_->Attach(place_.index);
  absl::Cleanup detach = [this] {
    if (destination_states_ != nullptr) destination_states_->Detach(place_.index);
  };
  HandleCompletions();
  RETURN_IF_ERROR(connections_.Init());
  now_ = absl::Now();
  RETURN_IF_ERROR(routing_.Start());
  PostCommitRead();
  ASSIGN_OR_RETURN(auto jobs, queue_->ListJobs());
  for (const auto& j : jobs) RETURN_IF_ERROR(window_.Load(j).status());
  PostIntakeRead();
  if (reloads_ != nullptr) PostReloadRead();
  absl::Time stop_deadline = absl::InfiniteFuture();
  const DeliveryWindow::OnTaken on_taken = [this](Work* w, const absl::Status& decoded) {
    OnTaken(w, decoded);
  };
  for (;;) {
    now_ = absl::Now();
    const absl::Time turn_started = now_;
    if (!stopping_ && stop_->load(std::memory_order_relaxed)) {
      stopping_ = true;
      stop_deadline = now_ + kStopGrace;
      // Every shard sees the same stop: one line says it.
      if (place_.index == 0) base::LogInfo("stopping: finishing transactions under way");
      for (auto& [key, d] : destinations_) QuitIdle(d.get());
    }
    if (stopping_ && (open_conns_ == 0 || now_ >= stop_deadline ||
                      (place_.stop_now != nullptr &&
                       place_.stop_now->load(std::memory_order_relaxed)))) {
      break;
    }
    RETURN_IF_ERROR(outcomes_.fatal());
    // Before a refill: what it takes meets the suspensions as they are now.
    if (place_.control != nullptr && !stopping_) ApplyControl();
    if (!stopping_ && !place_.committer->stalled() && window_.RefillDue(now_)) {
      TakeReadyJobs();
      RETURN_IF_ERROR(window_.Refill(now_, on_taken));
    }
    Dispatch();
    clock_read_ = false;
    RETURN_IF_ERROR(ring_.SubmitAndDispatch(NextWait()));
    now_ = absl::Now();
    routing_.OnTimer();
    for (Conn* c : connections_.DueNow(now_)) OnDeadline(c);
    outcomes_.Commit();
    PublishLoopMetrics(turn_started);
  }
  // Work never started stays in the queue as it is; just let go of it.
  for (auto& [key, d] : destinations_) {
    for (Work* w : d->ready.TakeAll()) delete w;
  }
  connections_.ForEach([](uint32_t, Conn& c) {
    for (ConnTransaction& t : c.transactions) {
      for (Work* w : t.works) delete w;
    }
    c.transactions.clear();
    if (c.lease != nullptr) c.lease->Closed();
    c.lease = nullptr;
    ::close(c.fd);
  });
  // The resolver goes now, while everything its callbacks could reach is still
  // there (issue 16).
  for (Work* w : routing_.Stop()) delete w;
  return outcomes_.CommitLast();
}

}  // namespace volley::engine
