#include "engine/destination_limits.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/log.h"

namespace volley::engine {

DestinationLimits::DestinationLimits(const DestinationPolicy* policy, std::string name,
                                     int sharing)
    : policy_(policy), name_(std::move(name)), sharing_(std::max(1, sharing)) {
  message_tokens_ = MessageBucket();
  connection_tokens_ = ConnectionBucket();
}

void DestinationLimits::SetPolicy(const DestinationPolicy* policy) {
  const DestinationPolicy* old = std::exchange(policy_, policy);
  if (old->max_message_rate.per_second != policy->max_message_rate.per_second) {
    message_tokens_ = MessageBucket();
  }
  if (old->max_connection_rate.per_second != policy->max_connection_rate.per_second) {
    connection_tokens_ = ConnectionBucket();
  }
  if (old->sources != policy->sources) source_credit_.clear();
  PushToCluster();
}

void DestinationLimits::SetCluster(cluster::Allowance* allowance,
                                   const cluster::Allowances* table, std::string node) {
  allowance_ = allowance;
  table_ = allowance != nullptr ? table : nullptr;
  node_ = std::move(node);
  // The buckets' rates change hands (to the allowance, or back to the pool).
  message_tokens_ = MessageBucket();
  connection_tokens_ = ConnectionBucket();
  PushToCluster();
}

cluster::PoolLimits DestinationLimits::ClusterLimits() const {
  cluster::PoolLimits l;
  l.message_rate = policy_->max_message_rate.limited() ? MessageRate() : 0;
  l.connection_rate = policy_->max_connection_rate.per_second;
  l.max_connections = MaxConnections();
  return l;
}

void DestinationLimits::PushToCluster() {
  if (allowance_ != nullptr) allowance_->SetLimits(ClusterLimits());
}

absl::Time DestinationLimits::NextGrantAt(absl::Time now) const {
  const absl::Time next = table_ != nullptr ? table_->NextGrantAt() : absl::InfiniteFuture();
  return next > now ? next : now + kGrantRetry;
}

bool DestinationLimits::AdoptClusterBackoff(absl::Time now) {
  if (allowance_ == nullptr || allowance_->cluster_backoff_level() <= backoff_level_) return false;
  const cluster::SharedBackoff shared = allowance_->ClusterBackoff();
  // A level whose step up is past is over (every node eased it by now): taking
  // it would undo the pool's own easing, and its own report coming back would
  // hold it there for good.
  if (shared.level <= backoff_level_ || shared.step_at <= now) return false;
  const int before = backoff_level_;
  if (before == 0) backoff_base_rate_ = MeasuredRate();
  backoff_level_ = std::clamp(shared.level, 0, kMaxBackoffLevel);
  backoff_step_at_ = shared.step_at;
  if (shared.period > absl::ZeroDuration()) backoff_period_ = shared.period;
  // The burst that raised the cluster's level is the one this pool may be
  // seeing too: it counts as this pool's raise.
  backoff_raised_ = now;
  backoff_reason_ = shared.reason;
  message_tokens_ = MessageBucket();
  PushToCluster();
  base::LogInfo("destination %s: backoff level %d from the cluster (%s)", name_, backoff_level_,
                shared.reason);
  return true;
}

void DestinationLimits::SetRoute(std::shared_ptr<const dns::Route> route) {
  if (route_ == route) return;
  std::vector<absl::Time> down(route->hosts.size(), absl::InfinitePast());
  if (route_) {
    for (size_t i = 0; i < route->hosts.size(); ++i) {
      for (size_t j = 0; j < route_->hosts.size(); ++j) {
        if (route_->hosts[j].name == route->hosts[i].name) down[i] = host_down_until_[j];
      }
    }
  }
  route_ = std::move(route);
  host_down_until_ = std::move(down);
}

size_t DestinationLimits::ChooseHost(absl::Time now, std::mt19937_64& rng) const {
  const std::vector<dns::Endpoint>& hosts = route_->hosts;
  size_t first_up = hosts.size();
  size_t soonest = 0;
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (host_down_until_[i] <= now) {
      first_up = i;
      break;
    }
    if (host_down_until_[i] < host_down_until_[soonest]) soonest = i;
  }
  if (first_up == hosts.size()) return soonest;
  // The MX names of that preference that have an address up, each once; the
  // addresses of one host in their order.
  std::vector<size_t> candidates;  // the first address up of each
  for (size_t i = first_up; i < hosts.size() && hosts[i].preference == hosts[first_up].preference;
       ++i) {
    if (host_down_until_[i] > now) continue;
    const bool seen = std::any_of(candidates.begin(), candidates.end(),
                                  [&](size_t k) { return hosts[k].mx == hosts[i].mx; });
    if (!seen) candidates.push_back(i);
  }
  if (candidates.size() == 1) return candidates.front();
  return candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng)];
}

void DestinationLimits::MarkHostDown(std::string_view host_name, absl::Time now) {
  // The route may have been replaced since the connection opened: by address.
  for (size_t i = 0; i < route_->hosts.size(); ++i) {
    if (route_->hosts[i].name == host_name) host_down_until_[i] = now + kHostDownTime;
  }
}

bool DestinationLimits::AnyHostUp(absl::Time now) const {
  return std::any_of(host_down_until_.begin(), host_down_until_.end(),
                     [&](absl::Time t) { return t <= now; });
}

int DestinationLimits::PickSource(int family, const std::vector<SourceChoice>& sources) {
  const std::vector<size_t>& pool = policy_->sources;
  if (pool.empty()) return -1;
  source_credit_.resize(pool.size(), 0);
  int total = 0;
  int best = -1;
  for (size_t i = 0; i < pool.size(); ++i) {
    const SourceChoice& s = sources[pool[i]];
    if (s.family != family) continue;
    source_credit_[i] += s.weight;
    total += s.weight;
    if (best < 0 || source_credit_[i] > source_credit_[static_cast<size_t>(best)]) {
      best = static_cast<int>(i);
    }
  }
  if (best < 0) return -2;
  source_credit_[static_cast<size_t>(best)] -= total;
  return static_cast<int>(pool[static_cast<size_t>(best)]);
}

int DestinationLimits::MaxConnections() const {
  return std::max(1, (policy_->max_connections / Sharing()) >> backoff_level_);
}

bool DestinationLimits::MayOpen(size_t waiting_transactions, int connections, int opening,
                                absl::Time now) const {
  // The waiting transactions per connection imply more waiting than sessions
  // starting (opening <= connections).
  return !suspended(now) &&
         waiting_transactions > WaitingPerConnection() * static_cast<size_t>(connections) &&
         opening < policy_->max_connections_opening && connections < MaxConnections();
}

size_t DestinationLimits::WaitingPerConnection() const {
  // A server without PIPELINING or CHUNKING takes one transaction at a time
  // whatever the bound: its destination opens connections as it did at 1.
  const size_t depth = session_depth_ > 0
                           ? session_depth_
                           : static_cast<size_t>(std::max(1, policy_->max_transactions_in_flight));
  return kWaitingPerConnection * depth;
}

bool DestinationLimits::KeepsConnection(int messages_sent, int connections,
                                        absl::Time now) const {
  return messages_sent < policy_->max_messages_per_connection &&
         connections <= MaxConnections() && !suspended(now) &&
         (allowance_ == nullptr || !allowance_->OverAllowed());
}

// A configured rate is the site's: a shard's pool takes its share (a cluster
// pool the node's whole, for the allowance). A measured one
// (backoff_base_rate_) is this pool's own already.
double DestinationLimits::MessageRate() const {
  const double configured = policy_->max_message_rate.per_second / Sharing();
  if (backoff_level_ == 0) return configured;
  const double base = policy_->max_message_rate.limited() ? configured : backoff_base_rate_;
  return base / static_cast<double>(1 << backoff_level_);
}

// With an allowance, its bucket is unlimited while the allowance limits the
// rate, and the allowance unlimited while the bucket does (a measured rate):
// one of the two refuses, and no token of the other is spent for nothing.
bool DestinationLimits::TakeMessageToken(absl::Time now) {
  if (!message_tokens_.TryTake(now)) return false;
  if (allowance_ != nullptr && !allowance_->TakeMessage()) return false;
  messages_started_.Add(now);
  return true;
}

bool DestinationLimits::TakeConnectionToken(absl::Time now) {
  if (allowance_ != nullptr) return allowance_->TakeConnection();
  return connection_tokens_.TryTake(now);
}

absl::Time DestinationLimits::NextMessageTokenAt(absl::Time now) {
  return ClusterMessageRate() ? NextGrantAt(now) : message_tokens_.NextAt(now);
}

absl::Time DestinationLimits::NextConnectionTokenAt(absl::Time now) {
  return allowance_ != nullptr ? NextGrantAt(now) : connection_tokens_.NextAt(now);
}

void DestinationLimits::SetSharing(int sharing) {
  sharing = std::max(1, sharing);
  if (sharing_ == sharing) return;
  sharing_ = sharing;
  message_tokens_ = MessageBucket();
  connection_tokens_ = ConnectionBucket();
}

TokenBucket DestinationLimits::ConnectionBucket() const {
  Rate r;
  r.per_second = allowance_ != nullptr ? 0 : policy_->max_connection_rate.per_second / sharing_;
  return TokenBucket(r);
}

TokenBucket DestinationLimits::MessageBucket() const {
  Rate r;
  r.per_second = ClusterMessageRate() ? 0 : MessageRate();
  return TokenBucket(r);
}

// What backoff halves without a configured rate: the rate it has been sending
// at (at least one message a second, so that it still gets through), or 0
// while there is no measure yet.
double DestinationLimits::MeasuredRate() const {
  const double measured = messages_started_.PerSecond();
  return measured > 0 ? std::max(1.0, measured) : 0;
}

DestinationLimits::ReplyEffect DestinationLimits::OnReply(const BackoffRule& rule,
                                                          const smtp::Outcome& reply,
                                                          absl::Time now) {
  backoff_reason_ =
      absl::StrCat(reply.code, " ", reply.enhanced, " ", reply.text.substr(0, 200));
  switch (rule.action) {
    case BackoffAction::kBackoff: {
      backoff_period_ = rule.period;
      // One step per burst: replies on parallel connections to the same cause
      // should not take the destination to the bottom at once.
      if (now - backoff_raised_ < rule.period / 10) return ReplyEffect::kNone;
      const int before = backoff_level_;
      Step(+1, now);
      return backoff_level_ != before ? ReplyEffect::kBackoffRaised : ReplyEffect::kNone;
    }
    case BackoffAction::kSuspend: {
      const bool new_suspension = !suspended(now);
      if (new_suspension) {
        base::LogInfo("%s: suspended for %s after: %s", route_ ? route_->name : name_,
                      absl::FormatDuration(rule.period), backoff_reason_);
      }
      suspended_until_ = std::max(suspended_until_, now + rule.period);
      return new_suspension ? ReplyEffect::kSuspended : ReplyEffect::kNone;
    }
    case BackoffAction::kBounce: return ReplyEffect::kBounce;
  }
  return ReplyEffect::kNone;
}

void DestinationLimits::RestoreBackoff(int level, absl::Time step_at, absl::Duration period,
                                       std::string reason) {
  backoff_level_ = std::clamp(level, 0, kMaxBackoffLevel);
  backoff_step_at_ = step_at;
  backoff_period_ = period;
  backoff_reason_ = std::move(reason);
  backoff_base_rate_ = 0;  // measured again: the rate before the restart is gone
  message_tokens_ = MessageBucket();
  PushToCluster();
}

void DestinationLimits::StepDownIfDue(absl::Time now) {
  if (backoff_level_ > 0 && now >= backoff_step_at_) Step(-1, now);
}

void DestinationLimits::Step(int step, absl::Time now) {
  const int before = backoff_level_;
  backoff_level_ = std::clamp(backoff_level_ + step, 0, kMaxBackoffLevel);
  if (step > 0) backoff_raised_ = now;
  backoff_step_at_ = now + backoff_period_;
  if (backoff_level_ == before) return;
  if (before == 0) backoff_base_rate_ = MeasuredRate();
  message_tokens_ = MessageBucket();
  if (allowance_ != nullptr) {
    PushToCluster();  // the rate halves (or doubles back) node-wide
    // A reason adopted from the cluster already names the node that saw it.
    std::string reason = absl::StrContains(backoff_reason_, " (seen by ")
                             ? backoff_reason_
                             : absl::StrCat(backoff_reason_, " (seen by ",
                                            node_.empty() ? "a node" : node_, ")");
    allowance_->ReportBackoff(cluster::SharedBackoff{backoff_level_, backoff_step_at_,
                                                     backoff_period_, std::move(reason)});
  }
  const double rate = MessageRate();
  base::LogInfo("%s: backoff %s to level %d (%d connections, %s messages/s at most)%s%s", name_,
                step > 0 ? "raised" : "eased", backoff_level_, MaxConnections(),
                rate > 0 ? absl::StrFormat("%.1f", rate) : "unlimited",
                step > 0 ? " after: " : "", step > 0 ? backoff_reason_ : "");
}

bool DestinationLimits::MeasureBase() {
  if (backoff_level_ == 0 || backoff_base_rate_ > 0 || policy_->max_message_rate.limited()) {
    return false;
  }
  backoff_base_rate_ = MeasuredRate();
  if (backoff_base_rate_ == 0) return false;
  message_tokens_ = MessageBucket();
  base::LogInfo("%s: backoff level %d: %.1f messages/s at most (measured)", name_, backoff_level_,
                MessageRate());
  return true;
}

bool DestinationLimits::Settled(absl::Time now) const {
  if (backoff_level_ > 0 || suspended(now) || PlaintextOnly(now)) return false;
  return std::all_of(host_down_until_.begin(), host_down_until_.end(),
                     [now](absl::Time t) { return t <= now; });
}

}  // namespace volley::engine
