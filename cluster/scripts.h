// scripts.h - the Lua scripts the cluster agent keeps its shared state with
//
// SYNOPSIS
//   RedisLink link(options.redis, options.timeout);
//   const size_t take = link.AddScript(std::string(kGcraTakeScript));
//   link.Script(take, {RateKey(prefix, pool, "msg"), AskersKey(prefix, pool, "msg")},
//               {"50", "5", "5", "node-a", "200000"});
//
// DESCRIPTION
//   Each script runs atomically in Redis (a script is one command: no other
//   client's command runs between its reads and its writes), which is what
//   makes a take from a shared limit safe when several nodes take at once.
//   Every time a script uses is Redis's own (TIME), never a node's: the nodes'
//   clocks differ, Redis's is one clock for all. Times sent in or returned are
//   durations from "now", for the same reason.
//
//   Keys start with Options::key_prefix and carry the destination pool in a
//   hash tag ("volley:{mx.example.test:25|bulk}:rate:msg"), so that a Redis
//   Cluster would keep one destination's keys on one shard, as a script
//   touching several keys needs. Every key has an expiry: a destination no
//   longer sent to leaves nothing behind.
//
//   kGcraTakeScript: KEYS = {rate key, askers hash}; ARGV = {rate per second,
//     burst, n wanted, node, fairness window in microseconds, share (what a
//     round of asks should bring, at most burst; burst when absent)}. Returns
//     the permits granted, 0 to n.
//   kLeaseScript: KEYS = {lease set, askers hash}; ARGV = {node, want, open,
//     max, lease ttl ms, fairness window ms, give back all (1/0)}. Returns
//     {leases the node holds, leases it may use}.
//   kHeartbeatScript: KEYS = {node set}; ARGV = {node, ttl ms, leaving
//     (1/0)}. Returns the live node count.
//   kBackoffScript: KEYS = {backoff hash}; ARGV = {level reported or -1,
//     microseconds to its next step down, period in microseconds, reason}.
//     Returns {level, microseconds to its next step down, period, reason}.
#ifndef VOLLEY_CLUSTER_SCRIPTS_H_
#define VOLLEY_CLUSTER_SCRIPTS_H_

#include <string>
#include <string_view>

namespace volley::cluster {

extern const std::string_view kGcraTakeScript;
extern const std::string_view kLeaseScript;
extern const std::string_view kHeartbeatScript;
extern const std::string_view kBackoffScript;

// The keys of pool `pool` ("ROUTE|POLICY"): "PREFIX{POOL}:WHAT".
std::string PoolKey(std::string_view prefix, std::string_view pool, std::string_view what);
// The node set: "PREFIXnodes".
std::string NodesKey(std::string_view prefix);

}  // namespace volley::cluster

#endif  // VOLLEY_CLUSTER_SCRIPTS_H_
