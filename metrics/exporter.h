// exporter.h - the Prometheus exposition: shards' counters summed at scrape time
//
// SYNOPSIS
//   ExporterSources sources;
//   sources.shards = {&shard_metrics};
//   sources.intake = &intake_metrics;
//   sources.store = [&] { return ReadStoreSnapshot(); };   // queue, RocksDB, disk
//   std::unique_ptr<Exporter> exporter = Exporter::Create(sources);
//   std::string text = exporter->Render();   // the body of GET /metrics
//
// DESCRIPTION
//   The exporter renders the text a scrape returns (content type
//   kExpositionContentType); it does not listen. volleyd serves it on
//   [metrics] listen with its own HTTP server (engine/metrics_endpoint.h):
//   metrics/ stays below engine/, and /metrics shares the admin API's server,
//   which idle connections cannot starve. On each Render the exporter reads
//   the counters (metrics/metrics.h) of every shard and of
//   intake, sums them, asks `store` for what only the queue knows (jobs and their
//   durable progress, RocksDB's properties, free disk space), reads the process's
//   CPU time and RSS from /proc, and renders the families of docs/metrics.md.
//   Nothing on the delivery path waits for a scrape.
//
//   Every sample of a volley_* family carries the label node="NAME"
//   (ExporterSources::node), added here in one place rather than by each
//   family, so that one Prometheus scraping a cluster's nodes can `sum by
//   (node)` and no family can forget it. process_* and exposer_* keep their
//   usual names and labels: the scrape's own instance label tells nodes apart
//   there.
//
// LIMITS
//   ExporterSources::max_jobs jobs get volley_job_recipients series (the newest).
//
// CONTRACT
//   Render is called from the HTTP server's threads, one scrape at a time or
//   several: it reads counters (relaxed atomics) and calls `store` and
//   `endpoint`, which must be thread-safe.
//
// ERRORS
//   None: a store that cannot be read leaves its families out (StoreSnapshot).
#ifndef VOLLEY_METRICS_EXPORTER_H_
#define VOLLEY_METRICS_EXPORTER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "metrics/metrics.h"

namespace volley::metrics {

struct JobSnapshot {
  std::string id;
  std::string state;  // "ready", "paused", "cancelling"
  absl::Time queued_at;
  uint64_t total = 0, delivered = 0, bounced = 0, expired = 0, cancelled = 0, deferred = 0,
           pending = 0;
};

// JobFeedback - what came back for one job (queue::JobProgress), finished or not.
struct JobFeedback {
  std::string id;
  absl::Time queued_at;
  uint64_t delivered = 0, suppressed = 0, bounced_async = 0, complained = 0, unsubscribed = 0;
};

// StoreSnapshot - what the queue and the disk say at scrape time. `ok` false:
// reading failed, the store families are left out of this scrape.
struct StoreSnapshot {
  bool ok = false;
  std::vector<JobSnapshot> jobs;  // unfinished jobs
  std::vector<JobFeedback> feedback;  // every job that is not loading
  uint64_t sst_bytes = 0;
  uint64_t pending_compaction_bytes = 0;
  uint64_t write_stalls = 0;
  bool write_stopped = false;
  uint64_t queue_free_bytes = 0;
  uint64_t spool_free_bytes = 0;
  uint64_t free_floor_bytes = 0;
  // Filled in even when ok is false (the queue failing is when they matter):
  // outcome writes failing and retried now (engine/committer.h), and the
  // writes refused so far, each try counted.
  bool writes_stalled = false;
  uint64_t queue_write_errors = 0;
  uint64_t log_write_errors = 0;
};

// The content type of Render's text: Prometheus's text format 0.0.4.
inline constexpr const char* kExpositionContentType = "text/plain; version=0.0.4";

// EndpointStats - what the endpoint serving /metrics counted, rendered under
// the names prometheus-cpp's Exposer gave them before volleyd served /metrics
// itself (exposer_scrapes_total, exposer_transferred_bytes_total,
// exposer_request_latencies).
struct EndpointStats {
  uint64_t scrapes = 0;
  uint64_t transferred_bytes = 0;
  double latency_microseconds_sum = 0;
};

struct ExporterSources {
  // The node label's value (engine/host_name.h NodeName); empty: no node label.
  std::string node;
  std::vector<const ShardMetrics*> shards;
  const IntakeMetrics* intake = nullptr;
  const FeedbackMetrics* feedback = nullptr;
  const ReloadMetrics* reloads = nullptr;
  std::function<StoreSnapshot()> store;  // called on the exporter's thread
  size_t max_jobs = 100;
  std::function<EndpointStats()> endpoint;  // none: the exposer_ families are left out
  // Destinations an operator suspended now (engine/destination_control.h);
  // none: volley_destinations_suspended is left out.
  std::function<size_t()> suspended_destinations;
  // Fills in the cluster agent's counts (cluster/cluster_metrics.h CopyStats),
  // called on the exporter's thread at each scrape, so they are never older
  // than the scrape; none: the volley_cluster_ families at 0 (a node without
  // [cluster] is not shared, and an alert on volley_cluster_redis_up must not
  // see the series vanish).
  std::function<void(ClusterMetrics*)> cluster;
};

class Exporter {
 public:
  static std::unique_ptr<Exporter> Create(ExporterSources sources);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // The text a scrape returns now (kExpositionContentType).
  std::string Render() const;

 private:
  class Collector;
  Exporter() = default;
  std::shared_ptr<Collector> collector_;
};

}  // namespace volley::metrics

#endif  // VOLLEY_METRICS_EXPORTER_H_
