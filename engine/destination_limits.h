// destination_limits.h - one destination's limits: connections, rates, backoff, hosts, sources
//
// SYNOPSIS
//   DestinationLimits limits(&policy, "mx.example.test:25|bulk", /*sharing=*/1);
//   limits.SetRoute(route);
//   if (limits.MayOpen(waiting, connections, opening, now) && limits.TakeConnectionToken(now))
//     Connect(limits.route().hosts[limits.ChooseHost(now, rng)]);
//   if (limits.TakeMessageToken(now)) StartTransaction();
//   switch (limits.OnReply(rule, outcome, now)) { ... }   // a [[backoff]] rule matched
//
// DESCRIPTION
//   Everything that decides how much a destination (the domains sharing a route
//   and a [destination] policy) may take, and nothing that does it: no socket,
//   no connection, no clock of its own. The shard (engine/shard.h) asks and
//   acts. A new per-destination limit goes here, with a test in
//   tests/unit/engine/destination_limits_test.cc.
//
//   Connections: the policy's max_connections, shared between the shards that
//   have a pool for the same site (SetSharing: each takes 1/sharing), halved per
//   backoff level. A connection opens only while more transactions than
//   WaitingPerConnection() per connection wait, fewer than
//   max_connections_opening are starting, and the destination is not suspended.
//
//   Rates: max_message_rate and max_connection_rate are token buckets
//   (engine/shaping.h), the site's rate over `sharing`. Under backoff the
//   message rate halves per level too: the configured rate, or without one the
//   rate measured when backoff began (MeasureBase, once a second, until there
//   is a measure).
//
//   Cluster-scoped limits (docs/config.md, [cluster]): with [cluster] set and
//   the policy's scope "cluster", max_connections, max_message_rate and
//   max_connection_rate hold for every volleyd of the cluster together. The
//   shard then attaches the pool to its entry of the node's table
//   (SetCluster, cluster/allowance.h), which the node's cluster agent fills
//   with this node's part of each limit; the pool takes from it instead of
//   from its own token buckets:
//     - it sets the entry's limits to the policy's whole limits, backoff
//       applied (ClusterLimits), not split by `sharing`: the entry is the
//       node's, shared by its shards, and the agent splits between nodes;
//     - a transaction takes a message permit, an opening a connection permit
//       (TakeMessageToken, TakeConnectionToken); refused, the shard sleeps
//       until the agent's next grant (NextMessageTokenAt and
//       NextConnectionTokenAt say when), it does not poll;
//     - a connection opens only under the node's connection count (the
//       shard's TryOpen on allowance(), given back with Closed when the
//       connection closes, whatever closed it), and one whose transaction ends
//       while the node holds more than it may closes (KeepsConnection);
//     - a backoff level it reaches on its own is reported to the entry (with
//       this node's name in the reason), and a higher level the cluster agreed
//       is taken over (AdoptClusterBackoff): one node's 421 storm slows all.
//   Without a configured max_message_rate, a backoff's measured rate (below)
//   stays the pool's own: a measure of one shard is no cluster's rate.
//
//   Adaptive backoff (docs/config.md, [[backoff]]): a reply whose class has a
//   rule raises the level by one per burst (not again within a tenth of the
//   rule's period), suspends the destination, or bounces the recipient; a level
//   is undone per period without another such reply (StepDownIfDue).
//
//   Hosts: the most preferred host of the route that is not marked down, one at
//   random among MX hosts of equal preference (RFC 5321 section 5.1); a host
//   that failed before its session got going is passed over for kHostDownTime.
//   Sources: smooth weighted round robin over the policy's egress sources.
//
// CONTRACT
//   Single-threaded (one shard). `now` and the random source are the caller's.
//   The policy outlives the limits (or until SetPolicy replaces it). The
//   cluster entry and its table are the node's, shared with other shards and
//   the agent (atomics, cluster/allowance.h), and outlive the limits; nothing
//   here waits on them or starts a thread.
//
// BOUNDS
//   Backoff level 0..kMaxBackoffLevel (1/16 of the connections and rate).
//   Waiting for the cluster's grant: at least kGrantRetry between looks.
#ifndef VOLLEY_ENGINE_DESTINATION_LIMITS_H_
#define VOLLEY_ENGINE_DESTINATION_LIMITS_H_

#include <cstddef>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "cluster/allowance.h"
#include "dns/routes.h"
#include "engine/config.h"
#include "engine/shaping.h"
#include "engine/smtp/client.h"

namespace volley::engine {

// At most 1/16 of the connections, and of the message rate.
inline constexpr int kMaxBackoffLevel = 4;
// How long a host that failed before its session got going is passed over while
// the route has another: long enough not to hammer it, short enough that the
// preferred host takes the traffic back soon after it recovers.
inline constexpr absl::Duration kHostDownTime = absl::Minutes(1);
// Another connection opens only while more transactions than this per
// connection (open or opening), times the transactions a session there keeps in
// flight (WaitingPerConnection), are waiting: a new session costs a handshake of
// four or five round trips (TCP, greeting, EHLO, STARTTLS, EHLO), and in those
// round trips each session there is takes this many times its transactions in
// flight.
inline constexpr size_t kWaitingPerConnection = 8;
// When the cluster agent's next grant is overdue (its thread is late), a
// refused pool looks again after this: soon, but not in a busy loop.
inline constexpr absl::Duration kGrantRetry = absl::Milliseconds(10);

// An egress source as host choice needs it: its address family and weight.
struct SourceChoice {
  int family = 0;  // AF_INET, AF_INET6
  int weight = 1;
};

class DestinationLimits {
 public:
  // name: the pool's key as volleyd's log names it.
  DestinationLimits(const DestinationPolicy* policy, std::string name, int sharing);

  const DestinationPolicy& policy() const { return *policy_; }
  // SetPolicy - a reload (engine/reload.h) changed the policy: limits apply from
  // the next decision, a changed rate from the next token taken (its bucket
  // starts again, full); backoff, host and TLS fallback state are kept.
  void SetPolicy(const DestinationPolicy* policy);
  const std::string& name() const { return name_; }

  // SetRoute - new, or the site's addresses were looked up again: a host keeps
  // its down mark across the change, by address.
  void SetRoute(std::shared_ptr<const dns::Route> route);
  const std::shared_ptr<const dns::Route>& route() const { return route_; }
  // ChooseHost - the index in route().hosts a new connection goes to; when
  // every host is down, the one whose mark ends first (it may be back).
  size_t ChooseHost(absl::Time now, std::mt19937_64& rng) const;
  // MarkHostDown - the host of that name (HOST:PORT) failed before its session
  // got going: passed over for kHostDownTime.
  void MarkHostDown(std::string_view host_name, absl::Time now);
  bool AnyHostUp(absl::Time now) const;

  // PickSource - the index into `sources` of the next connection's egress
  // source for an address of `family`: -1 when the policy names none, -2 when
  // none of those it names has that family.
  int PickSource(int family, const std::vector<SourceChoice>& sources);

  // SetCluster - the pool's limits are the cluster's from now on: taken from
  // `allowance`, the pool's entry of the node's table `table`; `node` names
  // this volleyd in the backoff reasons it reports. Null allowance: the pool's
  // own limits again (a reload made its scope "node"). Connections opened
  // under the entry give their count back to it, not to the pool.
  void SetCluster(cluster::Allowance* allowance, const cluster::Allowances* table,
                  std::string node);
  cluster::Allowance* allowance() const { return allowance_; }
  // ClusterLimits - what the entry is set to: the policy's limits, whole, the
  // message rate and connections halved per backoff level (a rate that is
  // only measured is not the cluster's: 0 there).
  cluster::PoolLimits ClusterLimits() const;
  // NextGrantAt - when the agent adds permits next (never `now` or before, so
  // that a late agent is not polled in a loop).
  absl::Time NextGrantAt(absl::Time now) const;
  // AdoptClusterBackoff - once a second: the level the cluster agreed is
  // above the pool's and still in force (its next step up is to come): the
  // pool takes it, with its step time, period and reason, and logs it; true
  // then.
  bool AdoptClusterBackoff(absl::Time now);

  // MaxConnections - now: the policy's share (the whole of it for a cluster
  // pool, whose node count the allowance holds), halved per backoff level, at
  // least 1.
  int MaxConnections() const;
  // MayOpen - another connection is worth opening: transactions nobody is about
  // to take, room under the limits, not suspended.
  bool MayOpen(size_t waiting_transactions, int connections, int opening, absl::Time now) const;
  // WaitingPerConnection - the transactions one connection is about to take:
  // kWaitingPerConnection times the transactions a session here keeps in flight
  // (the latest session's, SetSessionDepth; the policy's bound until one is ready).
  size_t WaitingPerConnection() const;
  // SetSessionDepth - a session here is ready and may keep `in_flight`
  // transactions under way (1 when the server lacks PIPELINING or CHUNKING).
  void SetSessionDepth(size_t in_flight) { session_depth_ = in_flight; }
  // KeepsConnection - a connection whose transaction just ended may take
  // another: under max_messages_per_connection, not above MaxConnections (it
  // was lowered meanwhile), not over the node's cluster connections, not
  // suspended.
  bool KeepsConnection(int messages_sent, int connections, absl::Time now) const;

  // MessageRate - messages a second now: the configured one, or under backoff
  // the rate measured when it began; halved per level. 0: no limit.
  double MessageRate() const;
  // TakeMessageToken - a transaction may start now (and is counted as started).
  bool TakeMessageToken(absl::Time now);
  bool TakeConnectionToken(absl::Time now);
  absl::Time NextMessageTokenAt(absl::Time now);
  absl::Time NextConnectionTokenAt(absl::Time now);

  // SetSharing - `sharing` shards have a pool for this site now.
  void SetSharing(int sharing);
  int sharing() const { return sharing_; }

  // STARTTLS is not tried until then (a handshake failed under "opportunistic").
  void FallBackToPlaintext(absl::Time until) { plaintext_until_ = until; }
  bool PlaintextOnly(absl::Time now) const { return now < plaintext_until_; }

  // What a reply with a [[backoff]] rule did.
  enum class ReplyEffect {
    kNone,            // nothing changed (the level was raised within this burst)
    kBackoffRaised,   // one level down in connections and rate
    kSuspended,       // nothing goes out until suspended_until()
    kBounce,          // the rule bounces the recipient
  };
  // OnReply - `rule` matched the class of `reply`, a server's own reply here.
  ReplyEffect OnReply(const BackoffRule& rule, const smtp::Outcome& reply, absl::Time now);
  // RestoreBackoff - a level kept from before a restart
  // (engine/destination_control.h): `level` (clamped to 0..kMaxBackoffLevel),
  // the next step up at `step_at`, then one every `period`; the rate it halves
  // is measured again (MeasureBase).
  void RestoreBackoff(int level, absl::Time step_at, absl::Duration period, std::string reason);
  absl::Duration backoff_period() const { return backoff_period_; }
  // StepDownIfDue - a period passed without another such reply: one level up.
  void StepDownIfDue(absl::Time now);
  // MeasureBase - once a second: backed off without a configured rate before
  // there was a measure, it gets its limit as soon as there is one; true then.
  bool MeasureBase();

  int backoff_level() const { return backoff_level_; }
  bool suspended(absl::Time now) const { return now < suspended_until_; }
  // Settled - nothing here would be lost by starting afresh at `now`: no backoff
  // or suspension, no TLS fallback and no host marked down still running. (The
  // rate buckets refill and the measured rates decay on their own.)
  bool Settled(absl::Time now) const;
  absl::Time suspended_until() const { return suspended_until_; }
  absl::Time backoff_step_at() const { return backoff_step_at_; }
  const std::string& backoff_reason() const { return backoff_reason_; }
  // StartedRate - transactions started per second lately (0 until measured).
  double StartedRate() const { return messages_started_.PerSecond(); }

 private:
  void Step(int step, absl::Time now);
  // The shares of this pool: 1 for a cluster pool (the table is the node's).
  int Sharing() const { return allowance_ != nullptr ? 1 : sharing_; }
  // Whether the cluster's allowance, not a bucket of the pool, limits it.
  bool ClusterMessageRate() const {
    return allowance_ != nullptr && policy_->max_message_rate.limited();
  }
  // PushToCluster - the pool's limits changed (policy, level): the entry
  // gets them.
  void PushToCluster();
  TokenBucket ConnectionBucket() const;
  TokenBucket MessageBucket() const;
  double MeasuredRate() const;

  const DestinationPolicy* policy_;
  std::string name_;
  int sharing_ = 1;
  cluster::Allowance* allowance_ = nullptr;       // null: a node-scoped pool
  const cluster::Allowances* table_ = nullptr;   // the allowance's
  std::string node_;                               // this volleyd, in reasons
  std::shared_ptr<const dns::Route> route_;
  // Per host of the route: passed over until then.
  std::vector<absl::Time> host_down_until_;
  absl::Time plaintext_until_ = absl::InfinitePast();
  TokenBucket message_tokens_;
  TokenBucket connection_tokens_;
  // Transactions started lately, and (backed off without a configured
  // max_message_rate) the rate measured when backoff began, or as soon as there
  // was a measure: what its levels halve. 0: not measured (no rate limit yet).
  RateMeter messages_started_;
  double backoff_base_rate_ = 0;
  int backoff_level_ = 0;
  size_t session_depth_ = 0;  // 0: no session ready yet
  absl::Duration backoff_period_;
  absl::Time backoff_step_at_ = absl::InfinitePast();  // the next step up
  absl::Time backoff_raised_ = absl::InfinitePast();
  absl::Time suspended_until_ = absl::InfinitePast();
  std::string backoff_reason_;  // the reply behind the last step or suspension
  // Smooth weighted round robin: each pick adds every source's weight to its
  // credit and takes the largest, which then pays the total back. Sources are
  // taken in proportion, evenly interleaved.
  std::vector<int> source_credit_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_DESTINATION_LIMITS_H_
