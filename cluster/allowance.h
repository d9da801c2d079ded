// allowance.h - a node's share of cluster-wide destination limits: what its
// shards take, what the cluster agent fills
//
// SYNOPSIS
//   cluster::Allowances table;                    // one per volleyd (node)
//
//   // a shard, for a pool whose [destination] scope is "cluster":
//   cluster::Allowance* a = table.Join("mx.example.test:25|bulk");
//   a->SetLimits({.message_rate = 50, .connection_rate = 5, .max_connections = 20});
//   if (a->TakeMessage()) StartTransaction(); else WakeAt(a->NextGrantAt());
//   if (a->TakeConnection() && a->TryOpen()) Connect();   // ... a->Closed() when it closes
//
//   // the agent (cluster/agent.h), once per batch interval:
//   for (cluster::Allowance* a : table.Snapshot()) {
//     cluster::Demand d = a->TakeDemand();
//     a->AddMessagePermits(granted_by_redis);
//     a->SetConnectionsAllowed(leases_held);
//   }
//   table.SetNextGrantAt(now + batch);
//
// DESCRIPTION
//   The shards of one volleyd do not talk to Redis: a shard is one io_uring
//   loop that must never wait on another machine. Between them and Redis sits
//   this table, one Allowance per destination pool ("ROUTE|POLICY"), node-wide
//   and shared by the node's shards, and the agent, one thread per node, which
//   asks Redis for the node's permits in batches (a tenth of a second's worth)
//   and leases for its connections, for all its shards at once. So Redis sees
//   one request per destination per batch interval per node, whatever the
//   number of shards or messages, and a slow or dead Redis slows nothing but
//   the agent: the shards go on taking what is in the table.
//
//   Messages and connection openings are permits: the agent adds them, a shard
//   takes one per transaction (TakeMessage) or per connection it opens
//   (TakeConnection). Concurrent connections are leases: the agent sets how
//   many the node may hold (SetConnectionsAllowed, the leases it holds in
//   Redis, or its fallback share); a shard opens one only under that count
//   (TryOpen) and gives it back when the connection closes (Closed). When the
//   count drops below what is open (a lease was lost), OverAllowed() tells the
//   shards to close connections as their transactions end.
//
//   A limit of 0 is no limit: its Take* always succeeds and the agent asks
//   Redis nothing for it.
//
//   Demand: each take, and each take refused, is counted, and the agent reads
//   and clears the counts (TakeDemand), so it asks only for pools in use and
//   only as much as they want.
//
//   Adaptive backoff is shared too: a shard reports its pool's level
//   (ReportBackoff), the agent publishes it and sets the level the cluster
//   agreed (SetClusterBackoff), which the shards apply when it is above their
//   own.
//
// CONTRACT
//   Thread-safe. Allowance pointers live as long as the table (a pool is never
//   removed: there is one per destination volleyd has sent to since start).
//   Takes and reports are lock-free (atomics); only the backoff reason and
//   Join take a lock.
#ifndef VOLLEY_CLUSTER_ALLOWANCE_H_
#define VOLLEY_CLUSTER_ALLOWANCE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

namespace volley::cluster {

// A pool's limits as its policy sets them now (backoff applied), cluster-wide.
struct PoolLimits {
  double message_rate = 0;     // transactions a second; 0: no limit
  double connection_rate = 0;  // connections opened a second; 0: no limit
  int max_connections = 0;     // concurrent connections; 0: no limit
};

// What a pool's shards took and were refused since the agent last asked.
struct Demand {
  uint64_t messages_taken = 0;
  uint64_t messages_refused = 0;
  uint64_t connections_taken = 0;
  uint64_t connections_refused = 0;
  uint64_t opens_refused = 0;  // TryOpen over the connections allowed
  int open = 0;                // connections open now, the node's shards together
};

// A pool's backoff as the cluster shares it.
struct SharedBackoff {
  int level = 0;
  absl::Time step_at = absl::InfinitePast();  // the next step up (level - 1)
  absl::Duration period;
  std::string reason;  // the reply behind it, with the node that saw it
};

class Allowance {
 public:
  explicit Allowance(std::string key) : key_(std::move(key)) {}
  Allowance(const Allowance&) = delete;
  Allowance& operator=(const Allowance&) = delete;

  const std::string& key() const { return key_; }

  // ---- the shards' side

  // SetLimits - the pool's limits now (a shard calls it when they change: a
  // reload, a backoff level); the last call wins.
  void SetLimits(const PoolLimits& limits);
  PoolLimits limits() const;

  // TakeMessage / TakeConnection - one permit, when there is one (always with
  // no limit).
  bool TakeMessage();
  bool TakeConnection();
  // TryOpen - one more connection under the node's allowed count (always with
  // no limit); Closed gives it back.
  bool TryOpen();
  void Closed();
  // OverAllowed - more connections are open than the node may hold now.
  bool OverAllowed() const;

  // ReportBackoff - the shard's level for this pool changed. Its reason is
  // published as given, so it should name the node that saw it (the engine
  // adds "(seen by NODE)"): the other nodes show it as their own reason.
  void ReportBackoff(const SharedBackoff& backoff);
  // ClusterBackoff - the level the cluster agreed (0 without a cluster yet).
  int cluster_backoff_level() const { return cluster_level_.load(std::memory_order_acquire); }
  SharedBackoff ClusterBackoff() const;

  // ---- the agent's side

  Demand TakeDemand();
  void AddMessagePermits(int64_t n);
  void AddConnectionPermits(int64_t n);
  int64_t message_permits() const { return message_permits_.load(std::memory_order_acquire); }
  int64_t connection_permits() const {
    return connection_permits_.load(std::memory_order_acquire);
  }
  // DropPermits - forget unused permits beyond `keep` (each): what a batch
  // left unused must not pile up into a burst later.
  void DropPermits(int64_t keep_messages, int64_t keep_connections);
  void SetConnectionsAllowed(int n);
  int connections_allowed() const { return allowed_.load(std::memory_order_acquire); }
  int open() const { return open_.load(std::memory_order_acquire); }
  // The level reported by this node's shards last (the highest since the agent
  // last took it), and whether it changed since.
  bool TakeReportedBackoff(SharedBackoff* out);
  void SetClusterBackoff(const SharedBackoff& backoff);

 private:
  static bool TakeOne(std::atomic<int64_t>& stock);

  const std::string key_;
  std::atomic<double> message_rate_{0};
  std::atomic<double> connection_rate_{0};
  std::atomic<int> max_connections_{0};

  std::atomic<int64_t> message_permits_{0};
  std::atomic<int64_t> connection_permits_{0};
  std::atomic<int> allowed_{0};
  std::atomic<int> open_{0};

  std::atomic<uint64_t> messages_taken_{0};
  std::atomic<uint64_t> messages_refused_{0};
  std::atomic<uint64_t> connections_taken_{0};
  std::atomic<uint64_t> connections_refused_{0};
  std::atomic<uint64_t> opens_refused_{0};

  std::atomic<int> cluster_level_{0};
  mutable std::mutex backoff_mu_;
  SharedBackoff reported_;       // under backoff_mu_
  bool reported_changed_ = false;
  SharedBackoff cluster_;        // under backoff_mu_
};

class Allowances {
 public:
  Allowances() = default;
  Allowances(const Allowances&) = delete;
  Allowances& operator=(const Allowances&) = delete;

  // Join - the pool's allowance, made on first use.
  Allowance* Join(std::string_view key);
  // Snapshot - every pool, for the agent.
  std::vector<Allowance*> Snapshot() const;
  size_t size() const;

  // When the agent adds permits next (a shard refused sleeps until then);
  // InfiniteFuture until the agent runs.
  absl::Time NextGrantAt() const;
  void SetNextGrantAt(absl::Time t);

  // Whether the limits are shared through Redis now (false: each node takes
  // its fallback share).
  bool shared() const { return shared_.load(std::memory_order_acquire); }
  void SetShared(bool shared) { shared_.store(shared, std::memory_order_release); }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Allowance>, std::less<>> pools_;
  std::atomic<int64_t> next_grant_us_{INT64_MAX};
  std::atomic<bool> shared_{false};
};

}  // namespace volley::cluster

#endif  // VOLLEY_CLUSTER_ALLOWANCE_H_
