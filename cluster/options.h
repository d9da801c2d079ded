// options.h - the [cluster] table: how a volleyd shares its limits (docs/config.md)
#ifndef VOLLEY_CLUSTER_OPTIONS_H_
#define VOLLEY_CLUSTER_OPTIONS_H_

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace volley::cluster {

struct Options {
  // redis: "HOST:PORT" of each Redis server, tried in order (the first that
  // answers is used until it stops answering). Empty: no cluster.
  std::vector<std::string> redis;
  // node: this volleyd's name in the cluster, unique. Default: the host name.
  std::string node;
  // expected_nodes: the fallback share is a limit over this many nodes; 0
  // takes the live node count last seen in Redis (1 when never seen).
  int expected_nodes = 0;
  // timeout: one Redis request, connect included; an answer later than that
  // counts as Redis down. Default: 200ms.
  absl::Duration timeout = absl::Milliseconds(200);
  // batch: permits are asked for this much of a limit's rate at a time, and
  // that often. Default: 100ms.
  absl::Duration batch = absl::Milliseconds(100);
  // lease_ttl: a connection lease (and the node's heartbeat) not renewed for
  // this long expires: how soon a dead node's connections go to the others.
  // Default: 10s.
  absl::Duration lease_ttl = absl::Seconds(10);
  // key_prefix: every Redis key starts with it (several clusters, one Redis).
  // Default: "volley:".
  std::string key_prefix = "volley:";

  bool enabled() const { return !redis.empty(); }
};

}  // namespace volley::cluster

#endif  // VOLLEY_CLUSTER_OPTIONS_H_
