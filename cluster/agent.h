// agent.h - the cluster agent: one thread per volleyd that shares its
// destinations' limits with the other nodes through Redis
//
// SYNOPSIS
//   cluster::Allowances table;
//   cluster::Options options;
//   options.redis = {"127.0.0.1:6379"};
//   options.node = "node-a";
//   cluster::Agent agent(options, &table);
//   RETURN_IF_ERROR(agent.Start());   // its thread; the shards take from `table`
//   ...
//   agent.Stop();                     // gives its leases back, leaves the node set
//
// DESCRIPTION
//   Once per batch interval (Options::batch) the agent asks Redis, for every
//   pool of the table its shards used lately, for the node's permits (message
//   and connection rates are GCRA limits kept in Redis, one Lua script called by
//   its hash) and renews, takes or gives back its connection leases (a sorted
//   set per destination, members expiring after Options::lease_ttl: a node that
//   dies gives its leases back by not renewing them). It heartbeats the node
//   set, from which it learns how many nodes are alive, and shares each
//   destination's backoff level.
//
//   Redis down or slower than Options::timeout: the agent falls back to the
//   node's share of each limit (the limit over the live node count it last saw,
//   or Options::expected_nodes when set), fills the table with that share
//   itself, logs the change once, and goes back to shared limits when Redis
//   answers again. The shards never wait on Redis either way.
//
// LIMITS
//   At most 1,000 Redis commands per round trip (a node with more busy pools
//   sends several round trips per batch); a pool's commands are never split
//   between two. Redis replies: see redis_link.h.
//
// CONTRACT
//   Start once, Stop once (or let the destructor stop it). stats() from any
//   thread.
#ifndef VOLLEY_CLUSTER_AGENT_H_
#define VOLLEY_CLUSTER_AGENT_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "cluster/allowance.h"
#include "cluster/options.h"

namespace volley::cluster {

struct Stats {
  bool redis_up = false;        // the last request was answered in time
  bool fallback = false;        // taking the node's share, not shared limits
  int live_nodes = 0;           // as last seen in Redis (0: never seen)
  uint64_t round_trips = 0;     // requests sent to Redis and answered or timed out
  uint64_t commands = 0;        // Redis commands in those round trips (pipelined)
  uint64_t fallbacks = 0;       // times it fell back
  uint64_t message_permits = 0;     // granted, shared or fallback
  uint64_t connection_permits = 0;
  int leases_held = 0;
};

class Agent {
 public:
  Agent(Options options, Allowances* table);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  absl::Status Start();
  void Stop();
  // StopWithoutGivingBack - stops as a node that dies would: its leases and
  // its heartbeat stay in Redis until they expire (lease_ttl). For tests of
  // what the other nodes then do; volleyd always calls Stop.
  void StopWithoutGivingBack();
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace volley::cluster

#endif  // VOLLEY_CLUSTER_AGENT_H_
