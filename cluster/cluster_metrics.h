// cluster_metrics.h - the cluster agent's Stats into the volley_cluster_
// metric families (docs/metrics.md)
//
// SYNOPSIS
//   // the exporter calls it at each scrape (metrics/exporter.h):
//   sources.cluster = [&agent](metrics::ClusterMetrics* m) { cluster::CopyStats(agent.stats(), m); };
//
// DESCRIPTION
//   The agent keeps its own counts (Agent::stats(), any thread); the exporter
//   reads metrics::ClusterMetrics (metrics/exporter.h). This copies the one
//   into the other, whole: the counts are the agent's running totals. Header-only, so that the agent's
//   library does not link the exporter's.
#ifndef VOLLEY_CLUSTER_CLUSTER_METRICS_H_
#define VOLLEY_CLUSTER_CLUSTER_METRICS_H_

#include <cstdint>

#include "cluster/agent.h"
#include "metrics/metrics.h"

namespace volley::cluster {

inline void CopyStats(const Stats& s, metrics::ClusterMetrics* m) {
  m->redis_up.Set(s.redis_up ? 1 : 0);
  m->fallback.Set(s.fallback ? 1 : 0);
  m->live_nodes.Set(s.live_nodes);
  m->leases_held.Set(s.leases_held);
  m->redis_round_trips_total.Set(static_cast<int64_t>(s.round_trips));
  m->fallbacks_total.Set(static_cast<int64_t>(s.fallbacks));
  m->permits_granted_total[0].Set(static_cast<int64_t>(s.message_permits));
  m->permits_granted_total[1].Set(static_cast<int64_t>(s.connection_permits));
}

}  // namespace volley::cluster

#endif  // VOLLEY_CLUSTER_CLUSTER_METRICS_H_
