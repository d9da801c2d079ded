#include "cluster/agent.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "cluster/redis_link.h"
#include "cluster/scripts.h"

namespace volley::cluster {
namespace {

// The bound on Redis commands in one round trip: a node with more busy pools
// than this (a few commands each) sends several round trips per batch, so
// that no single reply keeps Redis (or the agent) busy for long.
constexpr size_t kMaxCommandsPerRoundTrip = 1000;

// How long a pool keeps the leases its busiest recent moment needed before
// giving back those it no longer uses: connections that close and reopen
// between transactions should not churn leases every batch.
constexpr absl::Duration kLeaseHold = absl::Seconds(1);

// The fairness window of the rate script: an asker counts as wanting if it
// asked within this many of its ask intervals.
constexpr int kFairnessBatches = 2;

// A slow rate is asked for less often than every batch, so that one request
// brings about this many permits: a destination limited to 50 a second would
// otherwise cost Redis a request per node every batch for 5 messages. At most
// kMaxBatchesPerAsk batches apart (a second at the default batch), so a
// refused shard never waits longer than that for a permit.
constexpr double kPermitsPerAsk = 10;
constexpr int kMaxBatchesPerAsk = 10;

// The asks' worth a rate's bucket in Redis holds (RedisBurst).
constexpr int64_t kRedisBurstAsks = 2;

// How often a node that wants more leases than it holds asks again while
// the other nodes hold the rest (they give them back when they close); and
// how often a node renews while the set is full, so that a node holding
// every lease hears of another's want within this, not a quarter lease_ttl.
constexpr absl::Duration kLeasePoll = absl::Milliseconds(500);

// The cluster's backoff level is read this often for a busy pool (published
// at once when a shard raises it): a 421 storm is seconds long.
constexpr absl::Duration kBackoffReadEvery = absl::Seconds(1);

int64_t Ceil(double v) { return static_cast<int64_t>(std::ceil(v - 1e-9)); }

std::string Number(double v) { return absl::StrCat(v); }

int64_t ParseInt(const RedisReply& r, int64_t fallback = 0) {
  if (r.type == RedisReply::Type::kInteger) return r.integer;
  int64_t v = fallback;
  if (r.type == RedisReply::Type::kString && absl::SimpleAtoi(r.text, &v)) return v;
  return fallback;
}

}  // namespace

struct Agent::Impl {
  Impl(Options o, Allowances* t)
      : options(std::move(o)), table(t), link(options.redis, options.timeout) {
    gcra_script = link.AddScript(std::string(kGcraTakeScript));
    lease_script = link.AddScript(std::string(kLeaseScript));
    heartbeat_script = link.AddScript(std::string(kHeartbeatScript));
    backoff_script = link.AddScript(std::string(kBackoffScript));
  }

  // One rate's asking state: slow rates are asked for every few batches,
  // with what the shards took and were refused since the last ask.
  struct RateAsk {
    absl::Time next_at = absl::InfinitePast();
    uint64_t taken = 0;
    uint64_t refused = 0;
  };

  // What the agent keeps per pool between batches (its thread's own).
  struct Pool {
    RateAsk messages;
    RateAsk connections;
    absl::Time lease_renewed_at = absl::InfinitePast();
    int leases_allowed = 0;     // as last answered
    bool leases_grew = false;   // the last answer held more than the one before
    int lease_want_sent = 0;    // the want Redis last heard: the others' parts depend on it
    bool lease_set_full = false;  // the set held max_connections leases, all nodes counted
    absl::Time backoff_read_at = absl::InfinitePast();
    double carry_messages = 0;  // fallback fractions carried to the next batch
    double carry_connections = 0;
    int leases_held = 0;        // in Redis, as last answered
    int lease_peak = 0;         // the most wanted lately (kLeaseHold)
    absl::Time lease_peak_at = absl::InfinitePast();
    std::optional<SharedBackoff> unpublished;  // reported while Redis was away
  };

  // One pool's part of a batch: what it asks and where its replies go.
  struct Ask {
    Allowance* allowance = nullptr;
    Pool* pool = nullptr;
    Demand demand;
    PoolLimits limits;
    int message_index = -1;     // its commands' indexes in the round trip
    int connection_index = -1;
    int lease_index = -1;
    int backoff_index = -1;
    bool served = false;        // granted from Redis's replies this batch
  };

  void Run() {
    absl::Time next = absl::Now();
    std::unique_lock<std::mutex> lock(mu);
    while (!stopping) {
      lock.unlock();
      const absl::Time now = absl::Now();
      Batch(now);
      // Absolute ticks: the rate asked for is a batch's worth, so batches
      // must come a batch apart on average, however long one took.
      next += options.batch;
      if (next < absl::Now()) next = absl::Now() + options.batch;
      table->SetNextGrantAt(next);
      lock.lock();
      wake.wait_for(lock, absl::ToChronoNanoseconds(next - absl::Now()),
                    [&] { return stopping; });
    }
    lock.unlock();
    if (!abandon) GiveBack();
    link.Close();
  }

  int Nodes() const {
    if (options.expected_nodes > 0) return options.expected_nodes;
    return std::max(1, live_nodes);
  }

  double BatchSeconds() const { return absl::ToDoubleSeconds(options.batch); }

  // Batch - one batch interval's work: heartbeat, every busy pool's permits,
  // leases and backoff from Redis; the fallback share for the pools Redis did
  // not serve (all of them when it does not answer).
  void Batch(absl::Time now) {
    std::vector<Ask> asks;
    for (Allowance* a : table->Snapshot()) {
      Ask ask;
      ask.allowance = a;
      ask.pool = &pools[a];
      ask.demand = a->TakeDemand();
      ask.limits = a->limits();
      asks.push_back(ask);
    }

    if (!options.enabled()) {
      // No [cluster]: the share of a cluster of expected_nodes (1 by
      // default), with nothing shared to fall back from (Stats::fallback
      // stays false: volley_cluster_fallback alerts on a Redis lost).
      for (Ask& ask : asks) Fallback(now, &ask);
      return;
    }
    std::string why;
    bool answered = false;
    if (!link.connected() && now >= next_connect_at) {
      // At most once per batch interval: a dead Redis costs one connect
      // timeout per server per interval, not one per pool.
      next_connect_at = now + options.batch;
      if (absl::Status s = link.Connect(); !s.ok()) why = std::string(s.message());
    }
    if (link.connected()) {
      answered = Exchange(now, &asks, &why);
    } else if (why.empty()) {
      why = "not connected";
    }

    for (Ask& ask : asks) {
      if (!ask.served) Fallback(now, &ask);
    }

    std::lock_guard<std::mutex> lock(stats_mu);
    stats.redis_up = answered;
    stats.live_nodes = live_nodes;
    stats.round_trips = link.round_trips();
    stats.commands = link.commands();
    int held = 0;
    for (const auto& [a, p] : pools) held += p.leases_held;
    stats.leases_held = held;
    if (answered && (stats.fallback || !ever_shared)) {
      if (stats.fallback) {
        base::LogInfo("cluster: Redis at %s answers again: limits are shared", link.address());
      }
      if (stats.fallback) settle_until = now + options.lease_ttl;
      stats.fallback = false;
      ever_shared = true;
      table->SetShared(true);
    } else if (!answered && !stats.fallback) {
      stats.fallback = true;
      settle_until = absl::InfiniteFuture();  // until Redis answers again (above)
      ++stats.fallbacks;
      table->SetShared(false);
      base::LogWarning(
          "cluster: Redis at %s does not answer (%s): each node takes its share, 1/%d of every "
          "limit",
          link.address(), why, Nodes());
    }
  }

  // Exchange - the batch's commands to Redis, round trip by round trip; the
  // pools whose replies came are served. False when Redis did not answer
  // (the pools not served fall back; none is served twice).
  bool Exchange(absl::Time now, std::vector<Ask>* asks, std::string* why) {
    const int64_t ttl_ms = absl::ToInt64Milliseconds(options.lease_ttl);
    std::vector<RedisCommand> commands;
    commands.push_back(link.Script(heartbeat_script, {NodesKey(options.key_prefix)},
                                   {options.node, absl::StrCat(ttl_ms), "0"}));
    size_t first_ask = 0;  // the asks whose commands are in `commands`
    bool heartbeat = true;

    const auto flush = [&](size_t end) -> bool {
      if (commands.empty()) return true;
      absl::StatusOr<std::vector<RedisReply>> replies = link.RoundTrip(commands);
      if (!replies.ok()) {
        *why = std::string(replies.status().message());
        return false;
      }
      if (heartbeat) {
        const int64_t n = (*replies)[0].Int(-1);
        if (n > 0) live_nodes = static_cast<int>(n);
        heartbeat = false;
      }
      for (size_t i = first_ask; i < end; ++i) Apply(now, &(*asks)[i], *replies);
      commands.clear();
      first_ask = end;
      return true;
    };

    for (size_t i = 0; i < asks->size(); ++i) {
      Ask& ask = (*asks)[i];
      Allowance* a = ask.allowance;
      Pool& pool = *ask.pool;
      const Demand& d = ask.demand;
      const PoolLimits& l = ask.limits;
      std::vector<RedisCommand> mine;
      const int base = static_cast<int>(commands.size());

      if (l.message_rate > 0) {
        ask.message_index = AskRate(now, l.message_rate, a->message_permits(),
                                    d.messages_taken, d.messages_refused, "msg", a->key(),
                                    &pool.messages, base, &mine);
      }
      if (l.connection_rate > 0) {
        ask.connection_index = AskRate(now, l.connection_rate, a->connection_permits(),
                                       d.connections_taken, d.connections_refused, "conn",
                                       a->key(), &pool.connections, base, &mine);
      }
      if (l.max_connections > 0 || pool.leases_held > 0) {
        const int max = std::max(0, l.max_connections);
        const int now_wanted = static_cast<int>(std::min<uint64_t>(
            static_cast<uint64_t>(max),
            static_cast<uint64_t>(std::max(0, d.open)) + d.opens_refused));
        if (now_wanted >= pool.lease_peak || now - pool.lease_peak_at > kLeaseHold) {
          pool.lease_peak = now_wanted;
          pool.lease_peak_at = now;
        }
        int want = std::min(max, pool.lease_peak);
        // Back from a fallback, Redis may hold none of the connections the
        // nodes opened on their shares (a restarted Redis holds nothing):
        // until every node had time to claim its open ones (a lease_ttl, the
        // time a lease lives anyway), a node claims what it has open and
        // asks for nothing more, or the first to get through would take the
        // places of connections the others still hold.
        if (now < settle_until) want = std::min(want, std::max(0, d.open));
        // Redis is asked when the node holds leases it may not use or no
        // longer wants (given back at once, for the others), when it wants
        // more (each batch while it is being granted some, every
        // kLeasePoll while the set is full: polling it faster would only
        // cost Redis), and when its leases are due for renewal (four times
        // per ttl, so one lost round trip never loses them; every
        // kLeasePoll while the set is full, so that a holder hears of the
        // others' wants); and when it wants less than Redis last heard,
        // which frees the others' parts.
        const absl::Duration renew_every =
            pool.lease_set_full ? std::min(kLeasePoll, options.lease_ttl / 4) : options.lease_ttl / 4;
        const bool renew = now - pool.lease_renewed_at >= renew_every;
        const bool give_back = pool.leases_held > want || pool.leases_allowed < pool.leases_held;
        const bool grow = want > pool.leases_held &&
                          (pool.leases_grew || now - pool.lease_renewed_at >= kLeasePoll);
        const bool wants_less = want < pool.lease_want_sent;
        if (give_back || grow || wants_less || (pool.leases_held > 0 && renew)) {
          pool.lease_want_sent = want;
          ask.lease_index = base + static_cast<int>(mine.size());
          mine.push_back(link.Script(
              lease_script,
              {PoolKey(options.key_prefix, a->key(), "leases"),
               PoolKey(options.key_prefix, a->key(), "askers:leases")},
              {options.node, absl::StrCat(want), absl::StrCat(std::max(0, d.open)),
               absl::StrCat(max), absl::StrCat(ttl_ms), absl::StrCat(ttl_ms), "0"}));
        }
      }
      // Backoff: published when a shard reported a level, read for every
      // busy pool (another node may have raised it).
      SharedBackoff reported;
      const bool report = a->TakeReportedBackoff(&reported);
      if (report) pool.unpublished = reported;
      const bool busy = d.messages_taken + d.messages_refused + d.connections_taken +
                            d.connections_refused + d.opens_refused > 0 ||
                        d.open > 0;
      if (pool.unpublished.has_value() ||
          ((busy || a->cluster_backoff_level() > 0) && now >= pool.backoff_read_at)) {
        pool.backoff_read_at = now + kBackoffReadEvery;
        std::vector<std::string> args = {"-1", "0", "0", ""};
        if (pool.unpublished.has_value()) {
          const SharedBackoff& b = *pool.unpublished;
          args = {absl::StrCat(b.level),
                  absl::StrCat(std::max<int64_t>(0, absl::ToInt64Microseconds(b.step_at - now))),
                  absl::StrCat(std::max<int64_t>(0, absl::ToInt64Microseconds(b.period))),
                  b.reason};  // names the node already (the reporter's part)
        }
        ask.backoff_index = base + static_cast<int>(mine.size());
        mine.push_back(link.Script(backoff_script,
                                   {PoolKey(options.key_prefix, a->key(), "backoff")}, args));
      }

      // A pool's commands go in one round trip: were they split, a failure
      // between them could leave the pool half shared, half fallback.
      if (!commands.empty() && commands.size() + mine.size() > kMaxCommandsPerRoundTrip) {
        const int shift = static_cast<int>(commands.size());
        if (!flush(i)) return false;
        for (int* index :
             {&ask.message_index, &ask.connection_index, &ask.lease_index, &ask.backoff_index}) {
          if (*index >= 0) *index -= shift;
        }
      }
      for (RedisCommand& c : mine) commands.push_back(std::move(c));
    }
    return flush(asks->size());
  }

  // BatchesPerAsk - how many batches one ask of `rate` covers (kPermitsPerAsk).
  int BatchesPerAsk(double rate) const {
    const double per_batch = rate * BatchSeconds();
    if (per_batch <= 0) return 1;
    return static_cast<int>(
        std::clamp<double>(std::ceil(kPermitsPerAsk / per_batch - 1e-9), 1, kMaxBatchesPerAsk));
  }
  // Burst - what one ask may bring, and what the table may hold unused.
  int64_t Burst(double rate) const {
    return std::max<int64_t>(1, Ceil(rate * BatchSeconds() * BatchesPerAsk(rate)));
  }
  // RedisBurst - what the rate's bucket in Redis holds: two asks' worth.
  // Were it one, nodes asking in step (they do after they all reconnect to a
  // restarted Redis) would find one ask's worth of room per round, and every
  // round an ask came a tick late would lose what overflowed: measured, 4%
  // under the rate at the sink, steadily. The second ask's worth absorbs
  // that; it is also the most the nodes together may get above the rate.
  static int64_t RedisBurst(int64_t burst) { return kRedisBurstAsks * burst; }

  // AskRate - a GCRA take for one rate when due: an ask's worth less what the
  // table still holds, and never more than the demand suggests (refusals
  // mean hungry; otherwise what was taken is replaced). Its command's index,
  // or -1 when nothing is asked this batch.
  int AskRate(absl::Time now, double rate, int64_t held, uint64_t taken, uint64_t refused,
              const char* what, const std::string& pool_key, RateAsk* state, int base,
              std::vector<RedisCommand>* out) {
    state->taken += taken;
    state->refused += refused;
    if (now < state->next_at) return -1;
    const int batches = BatchesPerAsk(rate);
    const int64_t burst = Burst(rate);
    int64_t want = burst - held;
    if (state->refused == 0) want = std::min<int64_t>(want, static_cast<int64_t>(state->taken));
    if (want <= 0) return -1;
    state->taken = state->refused = 0;
    // Half a batch early: ticks jitter, and an ask a tick late would leave
    // the rate unused for a whole batch. An ask that covers several batches
    // comes a batch sooner or later at random (the same on average): nodes
    // that started asking together (all reconnected to a restarted Redis)
    // drift out of step instead of all asking, and sending their permits,
    // on the same tick for as long as they run.
    int skew = 0;
    if (batches > 1) skew = static_cast<int>(ask_skew(rng)) - 1;
    state->next_at = now + options.batch * (batches + skew) - options.batch / 2;
    const int64_t window_us =
        absl::ToInt64Microseconds(options.batch) * batches * kFairnessBatches;
    out->push_back(link.Script(gcra_script,
                               {PoolKey(options.key_prefix, pool_key, absl::StrCat("rate:", what)),
                                PoolKey(options.key_prefix, pool_key, absl::StrCat("askers:", what))},
                               {Number(rate), absl::StrCat(RedisBurst(burst)), absl::StrCat(want),
                                options.node, absl::StrCat(window_us), absl::StrCat(burst)}));
    return base + static_cast<int>(out->size()) - 1;
  }

  // Apply - one pool's replies: its permits, leases and the cluster's backoff.
  void Apply(absl::Time now, Ask* ask, const std::vector<RedisReply>& replies) {
    Allowance* a = ask->allowance;
    Pool& pool = *ask->pool;
    const auto reply = [&](int index) -> const RedisReply* {
      if (index < 0 || static_cast<size_t>(index) >= replies.size()) return nullptr;
      const RedisReply* r = &replies[static_cast<size_t>(index)];
      if (r->is_error()) {
        if (!logged_script_error) {
          base::LogError("cluster: a Redis script failed: %s", r->text);
          logged_script_error = true;
        }
        return nullptr;
      }
      return r;
    };
    const PoolLimits& l = ask->limits;
    // Permits unused beyond an ask's worth are dropped (the table's
    // contract), so that a pause never turns into a burst.
    a->DropPermits(Burst(l.message_rate), Burst(l.connection_rate));
    if (const RedisReply* r = reply(ask->message_index)) {
      const int64_t n = std::max<int64_t>(0, r->Int());
      a->AddMessagePermits(n);
      granted_messages += static_cast<uint64_t>(n);
    }
    if (const RedisReply* r = reply(ask->connection_index)) {
      const int64_t n = std::max<int64_t>(0, r->Int());
      a->AddConnectionPermits(n);
      granted_connections += static_cast<uint64_t>(n);
    }
    if (ask->lease_index >= 0) {
      if (const RedisReply* r = reply(ask->lease_index)) {
        const int held = static_cast<int>(std::max<int64_t>(0, r->IntAt(0)));
        pool.leases_grew = held > pool.leases_held;
        pool.leases_held = held;
        pool.leases_allowed = static_cast<int>(std::max<int64_t>(0, r->IntAt(1)));
        pool.lease_set_full = l.max_connections > 0 && r->IntAt(2) >= l.max_connections;
        pool.lease_renewed_at = now;
        a->SetConnectionsAllowed(pool.leases_allowed);
      }
    } else if (l.max_connections > 0) {
      a->SetConnectionsAllowed(pool.leases_allowed);  // unchanged, renewed recently
    }
    if (const RedisReply* r = reply(ask->backoff_index);
        r != nullptr && r->type == RedisReply::Type::kArray && r->elements.size() == 4) {
      pool.unpublished.reset();
      SharedBackoff b;
      b.level = static_cast<int>(ParseInt(r->elements[0]));
      if (b.level > 0) {
        b.step_at = now + absl::Microseconds(ParseInt(r->elements[1]));
        b.period = absl::Microseconds(ParseInt(r->elements[2]));
        b.reason = r->elements[3].text;
      }
      if (b.level != a->cluster_backoff_level() || b.level > 0) a->SetClusterBackoff(b);
    }
    ask->served = true;
  }

  // Fallback - the pool's share without Redis: its rates' worth of a batch
  // over the node count (fractions carried to the next batch), at most one
  // batch kept unused, and its connections over the node count (at least
  // one: a destination is never shut out).
  void Fallback(absl::Time now, Ask* ask) {
    Allowance* a = ask->allowance;
    Pool& pool = *ask->pool;
    const PoolLimits& limits = ask->limits;
    const double nodes = Nodes();
    const double seconds = BatchSeconds();
    const double messages = limits.message_rate / nodes * seconds + pool.carry_messages;
    const double connections = limits.connection_rate / nodes * seconds + pool.carry_connections;
    const int64_t whole_messages = static_cast<int64_t>(std::floor(messages));
    const int64_t whole_connections = static_cast<int64_t>(std::floor(connections));
    pool.carry_messages = messages - static_cast<double>(whole_messages);
    pool.carry_connections = connections - static_cast<double>(whole_connections);
    a->DropPermits(std::max<int64_t>(1, whole_messages), std::max<int64_t>(1, whole_connections));
    a->AddMessagePermits(whole_messages);
    a->AddConnectionPermits(whole_connections);
    granted_messages += static_cast<uint64_t>(whole_messages);
    granted_connections += static_cast<uint64_t>(whole_connections);
    const int allowed = limits.max_connections <= 0
                            ? 0
                            : std::max(1, static_cast<int>(limits.max_connections / nodes));
    a->SetConnectionsAllowed(allowed);
    // What Redis holds may have changed meanwhile (a restarted Redis holds
    // no leases): the first batch it answers again asks, whatever is due.
    pool.lease_renewed_at = absl::InfinitePast();
    pool.leases_grew = true;
    pool.messages.next_at = pool.connections.next_at = absl::InfinitePast();
    // The node's own reports wait for Redis; the cluster level last agreed
    // decays here as Redis would decay it.
    SharedBackoff reported;
    if (a->TakeReportedBackoff(&reported)) pool.unpublished = reported;
    SharedBackoff b = a->ClusterBackoff();
    if (b.level > 0 && now >= b.step_at) {
      --b.level;
      b.step_at = b.period > absl::ZeroDuration() ? b.step_at + b.period : absl::InfiniteFuture();
      if (b.level == 0) b = SharedBackoff{};
      a->SetClusterBackoff(b);
    }
  }

  // GiveBack - on Stop: this node's leases and its place in the node set,
  // one round trip, bounded by the timeout; best effort (a Redis away now
  // lets them expire after lease_ttl).
  void GiveBack() {
    if (options.redis.empty()) return;
    if (!link.connected() && !link.Connect().ok()) return;
    const int64_t ttl_ms = absl::ToInt64Milliseconds(options.lease_ttl);
    std::vector<RedisCommand> commands;
    for (auto& [a, pool] : pools) {
      if (pool.leases_held <= 0) continue;
      commands.push_back(link.Script(
          lease_script,
          {PoolKey(options.key_prefix, a->key(), "leases"),
           PoolKey(options.key_prefix, a->key(), "askers:leases")},
          {options.node, "0", "0", "0", absl::StrCat(ttl_ms), "0", "1"}));
      if (commands.size() >= kMaxCommandsPerRoundTrip) {
        if (!link.RoundTrip(commands).ok()) return;
        commands.clear();
      }
    }
    commands.push_back(link.Script(heartbeat_script, {NodesKey(options.key_prefix)},
                                   {options.node, absl::StrCat(ttl_ms), "1"}));
    if (link.RoundTrip(commands).ok()) {
      for (auto& [a, pool] : pools) pool.leases_held = 0;
    }
    std::lock_guard<std::mutex> lock(stats_mu);
    stats.round_trips = link.round_trips();
    stats.commands = link.commands();
    stats.leases_held = 0;
  }

  const Options options;
  Allowances* const table;
  RedisLink link;  // the agent thread's own
  size_t gcra_script = 0;
  size_t lease_script = 0;
  size_t heartbeat_script = 0;
  size_t backoff_script = 0;

  // The agent thread's own:
  std::unordered_map<Allowance*, Pool> pools;
  int live_nodes = 0;
  absl::Time next_connect_at = absl::InfinitePast();
  bool ever_shared = false;
  // Until then leases are claimed for open connections only (Exchange).
  absl::Time settle_until = absl::InfinitePast();
  bool logged_script_error = false;
  // AskRate's skew of a slow rate's asks: -1, 0 or +1 batch.
  std::minstd_rand rng{std::random_device{}()};
  std::uniform_int_distribution<unsigned> ask_skew{0, 2};

  std::atomic<uint64_t> granted_messages{0};
  std::atomic<uint64_t> granted_connections{0};
  mutable std::mutex stats_mu;
  Stats stats;  // under stats_mu

  std::mutex mu;
  std::condition_variable wake;
  bool stopping = false;  // under mu
  bool abandon = false;   // under mu until the thread ends; then read by it
  std::thread thread;
};

Agent::Agent(Options options, Allowances* table)
    : impl_(std::make_unique<Impl>(std::move(options), table)) {}

Agent::~Agent() { Stop(); }

absl::Status Agent::Start() {
  if (impl_->thread.joinable()) return absl::FailedPreconditionError("cluster agent: started twice");
  impl_->table->SetShared(false);
  impl_->thread = std::thread([this] { impl_->Run(); });
  return absl::OkStatus();
}

void Agent::Stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void Agent::StopWithoutGivingBack() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->abandon = true;
  }
  Stop();
}

Stats Agent::stats() const {
  std::lock_guard<std::mutex> lock(impl_->stats_mu);
  Stats s = impl_->stats;
  s.message_permits = impl_->granted_messages.load(std::memory_order_relaxed);
  s.connection_permits = impl_->granted_connections.load(std::memory_order_relaxed);
  return s;
}

}  // namespace volley::cluster
