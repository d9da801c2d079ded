// boards.h - what the shards share: the job board, site shares, each shard's place
//
// DESCRIPTION
//   Shards share no state on the hot path. These are the exceptions, each
//   touched rarely and under its own lock:
//   - JobBoard: which shards have finished their share of each job; the last
//     one to finish marks the job done. Once per job per shard.
//   - SiteShares: which shards have a pool for each site reached by DNS. A
//     site's domains hash to partitions of their own (engine.cc's partitioner),
//     so several shards may each open a pool for one site; each of those pools
//     then takes 1/k of the site's limits (DestinationLimits::SetSharing), k the
//     shards sharing it, so that together they keep them. Joined when a shard
//     makes the pool, reported once a second after that: one lock per shard per
//     second and per new pool, never per message.
//   - ShardPlace: which shard this is, its shares of the window and of the
//     connection budget, and the shared objects above; with [cluster] set, the
//     node's table of cluster-scoped limits too (cluster/allowance.h: atomics,
//     taken from per transaction and per connection, never locked there).
#ifndef VOLLEY_ENGINE_BOARDS_H_
#define VOLLEY_ENGINE_BOARDS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "queue/suppression.h"

namespace volley::cluster {
class Allowances;
}  // namespace volley::cluster

namespace volley::engine {

class Committer;
class DestinationControl;

class JobBoard {
 public:
  explicit JobBoard(size_t shards) : shards_(shards) {}
  // ShardFinished - true for the call that completes the job (once per job,
  // however often a shard reports it: a control command may reload a job).
  bool ShardFinished(uint32_t job_no, size_t shard);

 private:
  const size_t shards_;
  std::mutex mu_;
  std::map<uint32_t, std::vector<bool>> finished_;
};

class SiteShares {
 public:
  explicit SiteShares(size_t shards) : shards_(shards), reported_(shards) {}
  // Join - `shard` has a pool for `key` now; the shards sharing it.
  int Join(const std::string& key, size_t shard);
  // Report - `active` are the keys of `shard`'s pools with work or connections
  // now (any it reported before and not now has left); the sharing count of each.
  std::vector<int> Report(size_t shard, const std::vector<std::string>& active);

 private:
  int Mark(const std::string& key, size_t shard);
  const size_t shards_;
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::vector<bool>> sharing_;  // by pool key
  std::vector<absl::flat_hash_set<std::string>> reported_;       // by shard
};

struct ShardPlace {
  size_t index = 0;
  size_t count = 1;
  Committer* committer = nullptr;  // one lane per shard
  JobBoard* board = nullptr;
  SiteShares* sites = nullptr;  // null with one shard
  size_t window = 1;  // this shard's share of [delivery] window
  // This shard's share of the connection budget (engine/fd_budget.h).
  size_t connection_budget = 1;
  // This shard's share of [delivery] max_message_bytes_in_flight; 0: no bound
  // (engine/message_bytes.h).
  uint64_t max_message_bytes = 0;
  // Set by a second SIGTERM or SIGINT: stop at once, without the grace period.
  const std::atomic<bool>* stop_now = nullptr;
  // Looked up before each attempt (null: no list), so that an entry added while
  // a campaign runs takes effect at once (docs/feedback.md).
  const queue::SuppressionList* suppressions = nullptr;
  // Operator suspensions and retries, kept backoff levels
  // (engine/destination_control.h); null: none.
  DestinationControl* control = nullptr;
  // [cluster] set: the node's table of cluster-wide limits, which its
  // cluster-scoped pools take from (engine/destination_limits.h); null
  // otherwise.
  cluster::Allowances* cluster = nullptr;
  // This volleyd's name in the cluster, for the backoff reasons it shares.
  std::string node;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_BOARDS_H_
