// dispatch.cc - Shard's "send" step: active destinations, the connection budget,
// the bound on message bytes in flight, new connections. The limits themselves
// are DestinationLimits'.
#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/log.h"
#include "base/strings.h"
#include "engine/shard.h"

namespace volley::engine {

void Shard::Dispatch() {
  shaping_wake_ = absl::InfiniteFuture();
  ServeBytesWaiters();
  ServeBudgetWaiters();
  if (!budget_waiters_.empty() && now_ - last_idle_reclaim_ >= kIdleReclaimInterval) {
    ReclaimIdleConnections();
    last_idle_reclaim_ = now_;
  }
  // Only destinations with something to do (active_), not a walk over all.
  for (size_t i = 0; i < active_.size();) {
    Destination* d = active_[i];
    DispatchOne(d);
    // One waiting for message bytes is ServeBytesWaiters' until its turn: not
    // visited every turn meanwhile.
    if ((d->ready.empty() && d->limits.backoff_level() == 0) || message_bytes_.waiting(d)) {
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

void Shard::DispatchOne(Destination* d) {
  d->limits.StepDownIfDue(now_);
  if (d->limits.suspended(now_)) {
    // Nothing goes out while suspended: what waits is deferred with the reason.
    if (!d->ready.empty()) {
      FailDestination(
          d, MakeOutcome(smtp::Outcome::Kind::kTransient, 0, "4.7.0",
                         absl::StrCat("not sent: ", d->limits.route()->name,
                                      " is suspended until ",
                                      absl::FormatTime("%H:%M:%SZ", d->limits.suspended_until(),
                                                       absl::UTCTimeZone()),
                                      " after: ", d->limits.backoff_reason())));
    }
    return;
  }
  while (!d->ready.empty() && !d->idle.empty()) {
    if (!MayStartMessage(d)) {
      WaitForBytes(d);
      break;
    }
    Conn* c = d->idle.back();
    // A connection whose message did not fit kept the token it took.
    if (!c->token_taken) {
      if (!d->limits.TakeMessageToken(now_)) {
        WaitForToken(d, /*messages=*/true);
        break;
      }
      d->waiting_for_message_token = false;
      c->token_taken = true;
    }
    d->idle.pop_back();
    AssignNext(c);
    // The client may already have decided the transaction without sending a
    // byte (over the server's SIZE, no SMTPUTF8): collect that now, or the
    // connection would wait for a reply nobody is going to send.
    Drain(c);
    MaybeFree(c);
  }
  // Open more connections while there are transactions nobody is about to take
  // (and the bytes to send them: a connection opened meanwhile would only idle).
  while (!d->waiting_for_budget && !message_bytes_.waiting(d) && WantsConnection(*d)) {
    if (BudgetSpent() || !budget_waiters_.empty()) {
      // Behind those already waiting, whatever the budget says now.
      WaitForBudget(d);
      break;
    }
    const Opened opened = Connect(d);
    if (opened == Opened::kWaiting) break;
    if (opened == Opened::kNoDescriptor) {
      WaitForBudget(d);
      break;
    }
  }
}

void Shard::ReclaimIdleConnections() {
  // Connections that went idle before anyone waited for the budget; from now
  // on AssignNext closes them as they go idle.
  for (auto& [key, d] : destinations_) {
    if (d->ready.empty()) QuitIdle(d.get());
  }
}

void Shard::QuitIdle(Destination* d) {
  const std::vector<Conn*> idle = std::exchange(d->idle, {});
  for (Conn* c : idle) {
    c->client->Quit();
    connections_.Kick(c, now_);
  }
}

void Shard::WaitForBudget(Destination* d, bool again) {
  if (d->waiting_for_budget) return;
  d->waiting_for_budget = true;
  budget_waiters_.push_back(d);
  if (!again) metrics_->budget_waits.Add();
}

void Shard::ServeBudgetWaiters() {
  for (size_t turns = budget_waiters_.size(); turns > 0 && !budget_waiters_.empty(); --turns) {
    if (BudgetSpent()) return;
    Destination* d = budget_waiters_.front();
    budget_waiters_.pop_front();
    d->waiting_for_budget = false;
    if (!WantsConnection(*d)) continue;  // its work went elsewhere meanwhile
    if (Connect(d) == Opened::kWaiting) continue;
    if (WantsConnection(*d)) WaitForBudget(d, /*again=*/true);
  }
}

void Shard::WaitForToken(Destination* d, bool messages) {
  bool& waiting = messages ? d->waiting_for_message_token : d->waiting_for_connection_token;
  if (!waiting) {
    metrics_->rate_limit_waits[messages ? 0 : 1].Add();
    waiting = true;
  }
  const absl::Time next = messages ? d->limits.NextMessageTokenAt(now_)
                                   : d->limits.NextConnectionTokenAt(now_);
  shaping_wake_ = std::min(shaping_wake_, next);
}

// A cluster pool's place in the node's connection count first: a connection
// permit taken and then not used (no place) would be one less for the cluster.
Shard::Opened Shard::Connect(Destination* d) {
  cluster::Allowance* lease = d->limits.allowance();
  if (lease != nullptr && !lease->TryOpen()) {
    // Places come back as connections close (any shard's) and as the agent
    // grants: the next grant is the latest this pool looks again.
    shaping_wake_ = std::min(shaping_wake_, d->limits.NextGrantAt(now_));
    return Opened::kWaiting;
  }
  if (!d->limits.TakeConnectionToken(now_)) {
    if (lease != nullptr) lease->Closed();
    WaitForToken(d, /*messages=*/false);
    return Opened::kWaiting;
  }
  d->waiting_for_connection_token = false;
  const Opened opened = OpenConnection(d, lease);
  // Opened, the connection holds the place until MaybeFree; not, it goes back.
  if (opened != Opened::kYes && lease != nullptr) lease->Closed();
  return opened;
}

Shard::Opened Shard::OpenConnection(Destination* d, cluster::Allowance* lease) {
  OpenRequest request;
  request.dest = d;
  request.policy = &d->limits.policy();
  request.route = d->limits.route();
  request.host = d->limits.ChooseHost(now_, rng_);
  const dns::Endpoint& where = request.route->hosts[request.host];
  request.source = d->limits.PickSource(where.addr.ss_family, source_choices_);
  if (request.source == -2) {
    // Sending from an address the operator did not list would spend another
    // address's reputation: defer instead.
    FailDestination(d, MakeOutcome(smtp::Outcome::Kind::kTransient, 0, "4.4.0",
                                   absl::StrCat("no egress source of the address family of ",
                                                where.host, " among the destination's sources")));
    return Opened::kFailed;
  }
  request.plaintext_only = d->limits.PlaintextOnly(now_);
  absl::StatusOr<Conn*> opened = connections_.Open(request, now_);
  if (absl::IsResourceExhausted(opened.status())) {
    // Out of descriptors (or socket memory) whatever the budget said: a limit
    // lowered under volleyd, another process, a reserve too small. Nothing
    // about the destination failed, so nothing is deferred: no connection
    // opens beyond those open now for a while, and d waits for one.
    if (now_ >= fd_short_until_) {
      base::LogInfo("socket: %s with %zu connections open; new connections wait for one to "
                    "close (for %s at least)",
                    base::StdSv(opened.status().message()), open_conns_,
                    absl::FormatDuration(kFdShortTime));
    }
    fd_short_until_ = now_ + kFdShortTime;
    fd_short_cap_ = open_conns_;
    metrics_->fd_exhausted.Add();
    return Opened::kNoDescriptor;
  }
  if (!opened.ok()) {
    FailDestination(d, MakeOutcome(smtp::Outcome::Kind::kTransient, 0, "4.4.0",
                                   std::string(opened.status().message())));
    return Opened::kFailed;
  }
  (*opened)->lease = lease;
  ++d->connections;
  ++d->sessions_starting;
  ++open_conns_;
  metrics_->connections_opened.Add();
  metrics_->connections_open.Set(static_cast<int64_t>(open_conns_));
  return Opened::kYes;
}

// --- the bound on message bytes in flight

bool Shard::MayStartMessage(Destination* d) const {
  // Far from the bound (1 KiB messages under 64 MiB), nothing more to look at.
  if (message_bytes_.line_length() == 0 && message_bytes_.Fits(largest_message_)) return true;
  Work* const* next = d->ready.Peek();
  const uint64_t expected = next != nullptr ? (*next)->job->largest_message : 0;
  return message_bytes_.MayStart(d, expected);
}

void Shard::WaitForBytes(Destination* d) {
  if (message_bytes_.Wait(d)) metrics_->message_bytes_waits.Add();
}

bool Shard::ChargeMessage(Conn* c, Job* job, uint64_t size) {
  job->largest_message = std::max(job->largest_message, size);
  largest_message_ = std::max(largest_message_, size);
  if (!message_bytes_.Fits(size)) return false;
  message_bytes_.Take(c->dest, size);
  // Its turn in line (if it waited) is over: Dispatch visits it again, to
  // start more while they fit or to queue it again.
  Activate(c->dest);
  return true;
}

void Shard::ReleaseMessage(uint64_t size) {
  if (size > 0) message_bytes_.Give(size);
}

void Shard::ServeBytesWaiters() {
  // Each waiter gets at most one look a turn: one that cannot start (a rate
  // token, a suspension) leaves the line rather than spin here.
  for (size_t turns = message_bytes_.line_length(); turns > 0; --turns) {
    const std::optional<Destination*> head = message_bytes_.Head();
    if (!head) return;
    Destination* d = *head;
    if (d->ready.empty() || d->idle.empty()) {
      // Its work went elsewhere, or its idle connections closed: nothing to
      // start. It joins the line again when it has.
      message_bytes_.LeaveHead();
      Activate(d);
      continue;
    }
    if (!MayStartMessage(d)) return;  // the head's message does not fit yet: nobody passes it
    // Starting a transaction ends d's turn (it queues again when it wants
    // more); when none started (a rate token, a suspension), d leaves.
    const uint64_t starts = message_bytes_.starts();
    DispatchOne(d);
    if (message_bytes_.starts() == starts && message_bytes_.Head() == head) {
      message_bytes_.LeaveHead();
    }
    Activate(d);
  }
}

}  // namespace volley::engine
