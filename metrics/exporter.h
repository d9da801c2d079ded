// exporter.h - the Prometheus endpoint: shards' counters summed at scrape time
//
// SYNOPSIS
//   ExporterSources sources;
//   sources.shards = {&shard_metrics};
//   sources.intake = &intake_metrics;
//   sources.store = [&] { return ReadStoreSnapshot(); };   // queue, RocksDB, disk
//   ASSIGN_OR_RETURN(auto exporter, Exporter::Start("127.0.0.1:9464", sources));
//   // GET http://127.0.0.1:9464/metrics until the exporter is destroyed
//
// DESCRIPTION
//   prometheus-cpp's Exposer serves /metrics on its own threads; on each scrape
//   the exporter reads the counters (metrics/metrics.h) of every shard and of
//   intake, sums them, asks `store` for what only the queue knows (jobs and their
//   durable progress, RocksDB's properties, free disk space), reads the process's
//   CPU time and RSS from /proc, and renders the families of docs/metrics.md.
//   Nothing on the delivery path waits for a scrape.
//
// LIMITS
//   ExporterSources::max_jobs jobs get volley_job_recipients series (the newest).
//
// ERRORS
//   Start: InvalidArgument for a listen address that is not HOST:PORT, Unavailable
//   naming the address when it cannot be bound.
#ifndef VOLLEY_METRICS_EXPORTER_H_
#define VOLLEY_METRICS_EXPORTER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "metrics/metrics.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

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

struct ExporterSources {
  std::vector<const ShardMetrics*> shards;
  const IntakeMetrics* intake = nullptr;
  const FeedbackMetrics* feedback = nullptr;
  const ReloadMetrics* reloads = nullptr;
  std::function<StoreSnapshot()> store;  // called on the exporter's thread
  size_t max_jobs = 100;
};

class Exporter {
 public:
  static absl::StatusOr<std::unique_ptr<Exporter>> Start(const std::string& listen,
                                                         ExporterSources sources);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // The text a scrape returns now.
  std::string Render() const;
  // The port bound (useful with port 0).
  int port() const;

 private:
  class Collector;
  Exporter() = default;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace volley::metrics

#endif  // VOLLEY_METRICS_EXPORTER_H_
