// metrics.h - counters a single thread writes and the exporter reads
//
// SYNOPSIS
//   ShardMetrics m(options);                 // owned by the shard
//   const size_t i = static_cast<size_t>(DeliveryStatus::kDelivered);
//   m.deliveries[i].Add();                   // on the hot path: no lock, no RMW
//   m.transaction_seconds.Observe(0.012);
//   m.Destination("gmail-mx.test").deliveries[i].Add();
//   m.CountClass(DeliveryStatus::kBounced, "invalid_recipient");
//   m.SetDestinationLevels(levels);          // once a second: ready, connections, backoff
//   // the exporter (metrics/exporter.h), on its own thread at scrape time:
//   uint64_t n = m.deliveries[i].value();
//
// DESCRIPTION
//   Each counter has one writer: the shard (or the intake thread) that owns it.
//   An increment is a relaxed load and a relaxed store of the writer's own cache
//   line, so counting costs what a plain integer does and no other core ever
//   contends for it; the exporter reads with relaxed loads and may see a scrape's
//   counts a few increments apart from one another, never torn values. Shards are
//   summed at scrape time (docs/metrics.md).
//
// LIMITS
//   Per-destination series: MetricsOptions::max_destinations names get their own,
//   the first seen (names passed as `configured` always do); the rest count as
//   "other". Outcome classes: the classes passed in MetricsOptions::outcome_classes
//   (the [[classify]] classes at start) and those a reload adds, up to
//   kMaxOutcomeClasses; the rest count as "other".
//
// CONTRACT
//   Add/Set/Observe/Destination/CountClass/SetDestinationLevels: the owning
//   thread only. value(), snapshot readers, Destinations() and Classes(): any
//   thread.
#ifndef VOLLEY_METRICS_METRICS_H_
#define VOLLEY_METRICS_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "metrics/delivery_status.h"

namespace volley::metrics {

// Counter - monotonic, one writer.
class Counter {
 public:
  void Add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// Gauge - a level, one writer.
class Gauge {
 public:
  void Set(int64_t v) { v_.store(v, std::memory_order_relaxed); }
  void Add(int64_t n) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  int64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> v_{0};
};

// Histogram - fixed upper bounds (seconds), one writer.
class Histogram {
 public:
  explicit Histogram(std::span<const double> bounds);
  void Observe(double v);
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf last
    uint64_t count = 0;
    double sum = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1 (+Inf)
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

// Bucket bounds of docs/metrics.md.
std::span<const double> TransactionBuckets();
std::span<const double> QueueTimeBuckets();

// The label values of docs/metrics.md, as indexes. volley_deliveries_total's
// "result" is a DeliveryStatus (metrics/delivery_status.h).
enum class ConnFailure : uint8_t { kConnect, kTimeout, kGreeting, kEhlo, kTls, kProtocol, kClosed };
inline constexpr size_t kConnFailures = 7;
std::string_view ConnFailureName(ConnFailure f);

inline constexpr std::array<std::string_view, 5> kTlsVersions = {"TLSv1", "TLSv1.1", "TLSv1.2",
                                                                 "TLSv1.3", "other"};
// "TLSv1.3" -> its index in kTlsVersions; "other" for anything else.
size_t TlsVersionIndex(std::string_view version);
// volley_tls_handshakes_total's "kind": a full handshake, or a saved session resumed.
inline constexpr std::array<std::string_view, 2> kTlsHandshakeKinds = {"full", "resumed"};

inline constexpr std::array<std::string_view, 4> kDnsResults = {"ok", "nodata", "nxdomain",
                                                                "servfail"};

struct DestinationCounters {
  std::string name;  // written before the entry is published, never after
  std::array<Counter, kDeliveryOutcomes> deliveries;  // by DeliveryStatus
  // Levels the shard sets once a second (SetDestinationLevels), summed over the
  // pools that count under this name: recipients routed here and waiting in a
  // ready list, connections open or opening, and the highest backoff level.
  Gauge ready;
  Gauge connections;
  Gauge backoff_level;
};

// DestinationLevels - what one shard has for a destination now.
struct DestinationLevels {
  int64_t ready = 0;
  int64_t connections = 0;
  int64_t backoff_level = 0;
};

// Outcome classes (metrics/classify.h): the results that get a class, in this
// order, and the bound on distinct class names counted: every class a
// [[classify]] table may name (kMaxClassifyRules) plus "expired" and "other".
inline constexpr std::array<DeliveryStatus, 3> kClassifiedResults = {
    DeliveryStatus::kBounced, DeliveryStatus::kDeferred, DeliveryStatus::kExpired};
inline constexpr size_t kMaxOutcomeClasses = 256 + 2;

struct ClassCounters {
  std::string name;  // written before the entry is published, never after
  std::array<Counter, kClassifiedResults.size()> outcomes;  // by kClassifiedResults
};

struct MetricsOptions {
  // Destinations with series of their own besides the configured ones. Default: 20.
  size_t max_destinations = 20;
  // Classes exported from the start, at 0 until counted (Classifier::Classes()).
  std::vector<std::string> outcome_classes;
};

class ShardMetrics {
 public:
  // configured: names that always get their own series ([destination] tables).
  ShardMetrics(const MetricsOptions& options, const std::vector<std::string>& configured);

  std::array<Counter, kDeliveryOutcomes> deliveries;  // by DeliveryStatus
  std::array<Counter, 4> replies;  // 2xx, 3xx, 4xx, 5xx
  Histogram transaction_seconds{TransactionBuckets()};
  Histogram queue_seconds{QueueTimeBuckets()};
  Gauge connections_open;
  Counter connections_opened;
  // The connection budget (engine/fd_budget.h): the shard's share, the
  // destinations waiting for it now, the times one began to wait, and the times
  // socket() ran out of descriptors all the same.
  Gauge connection_budget;
  Gauge budget_waiting;
  Counter budget_waits;
  Counter fd_exhausted;
  // The bound on message bytes held by transactions under way
  // (engine/message_bytes.h): the shard's share, the bytes held now, the most
  // held at once since start, and the times a destination began to wait.
  Gauge message_bytes_limit;
  Gauge message_bytes_in_flight;
  Gauge message_bytes_peak;
  Counter message_bytes_waits;
  // Transactions started behind another under way on their connection
  // ([smtp] max_transactions_in_flight): pipelined, not waiting for its replies.
  Counter transactions_pipelined;
  // Receives that found the shard's receive buffer ring empty and fell back to
  // a buffer of the connection's own (engine/reactor/ring.h, out_of_buffers).
  Counter receive_buffers_exhausted;
  std::array<Counter, kConnFailures> connections_failed;
  std::array<Counter, kTlsVersions.size()> tls_sessions;
  std::array<Counter, kTlsHandshakeKinds.size()> tls_handshakes;  // full, resumed
  std::array<Counter, kDnsResults.size()> dns_queries;  // by AnswerKind order
  Counter dns_cache_hits;
  Counter dns_cache_misses;
  // The resolver (dns/resolver.h): questions sent to servers, waiting for their
  // turn now, in flight now, and refused because the wait queue was full.
  Counter dns_sent;
  Gauge dns_queued;
  Gauge dns_in_flight;
  Counter dns_queue_full;
  Gauge in_flight;
  Counter busy_nanos;
  // Times a destination's work began to wait for a token: [0] its message rate,
  // [1] its connection rate.
  std::array<Counter, 2> rate_limit_waits;
  // Adaptive backoff: [0] a destination's backoff raised a level, [1] suspended.
  std::array<Counter, 2> backoff_events;

  // Destination - the counters of `name`, or of "other" when the table is full.
  // Owning thread only; cheap after the first call for a name.
  DestinationCounters& Destination(std::string_view name);
  // Destinations - the published entries, "other" last; any thread.
  std::vector<const DestinationCounters*> Destinations() const;
  // SetDestinationLevels - owning thread: each published entry's gauges from
  // `levels`, 0 for an entry `levels` does not name (its pools are gone or idle).
  void SetDestinationLevels(
      const absl::flat_hash_map<const DestinationCounters*, DestinationLevels>& levels);

  // CountClass - one outcome of `status` with class `klass` (a record's
  // "class"); statuses not in kClassifiedResults and an empty class are not
  // counted. A class first seen once kMaxOutcomeClasses are taken counts as
  // "other". Owning thread only.
  void CountClass(DeliveryStatus status, std::string_view klass);
  // Classes - the published class entries; any thread.
  std::vector<const ClassCounters*> Classes() const;

  void CountReply(int code) {
    if (code >= 200 && code < 600) replies[static_cast<size_t>(code / 100 - 2)].Add();
  }

 private:
  size_t capacity_;
  std::unique_ptr<DestinationCounters[]> table_;  // capacity_ entries, then "other"
  std::atomic<size_t> published_{0};
  absl::flat_hash_map<std::string, DestinationCounters*> by_name_;  // owning thread

  ClassCounters& Class(std::string_view klass);
  std::unique_ptr<ClassCounters[]> classes_;  // kMaxOutcomeClasses entries
  std::atomic<size_t> classes_published_{0};
  absl::flat_hash_map<std::string, ClassCounters*> class_by_name_;  // owning thread
};

// IntakeMetrics - the intake thread's counts.
struct IntakeMetrics {
  Counter jobs_accepted;
  Counter jobs_failed;
  Counter recipients_accepted;
  Counter recipients_rejected;
  Counter recipients_suppressed;  // on the suppression list: not queued
};

// What SIGHUP reloads count (engine/reload.h); one writer, the reload thread.
struct ReloadMetrics {
  Counter ok;
  Counter failed;                // refused: the running config was kept
  Gauge last_success_seconds;    // Unix time of the last reload applied; 0: none
};

// What the feedback loop counts (engine/feedback.h, docs/feedback.md). Written
// by whoever holds the feedback processor's lock (one writer at a time).
inline constexpr std::array<std::string_view, 7> kReportKinds = {
    "dsn", "arf", "bounce_text", "auto_reply", "other", "unreadable", "unsubscribe"};
// The feedback events, in DeliveryStatus order from kBouncedAsync.
inline constexpr size_t kFeedbackEvents = kDeliveryStatuses - kDeliveryOutcomes;
inline constexpr std::array<std::string_view, 5> kSuppressionReasons = {
    "hard_bounce", "soft_bounce", "complaint", "unsubscribe", "manual"};

struct FeedbackMetrics {
  // "other" exists from the start, so that every event has a series (an alert
  // on increase() sees the first one).
  explicit FeedbackMetrics(size_t max_destinations = 20)
      : max_destinations_(max_destinations), destinations_{PerDestination{"other", {}}} {}
  std::array<Counter, kReportKinds.size()> reports;  // messages and requests, by kind
  std::array<Counter, kFeedbackEvents> events;       // by event
  std::array<Counter, kSuppressionReasons.size()> suppressions_added;  // by reason
  Counter jobs_paused;  // by pause_on_complaint_rate
  // Events by destination (the recipient's domain): the first max_destinations
  // seen get their own, the rest count as "other" (listed first).
  struct PerDestination {
    std::string name;
    std::array<uint64_t, kFeedbackEvents> events{};
  };
  void CountEvent(DeliveryStatus event, std::string_view domain);
  std::vector<PerDestination> Destinations() const;

 private:
  const size_t max_destinations_;
  mutable std::mutex mu_;
  std::vector<PerDestination> destinations_;  // guarded by mu_
};

// What the cluster agent reports (cluster/agent.h, docs/cluster.md), copied
// from its Stats once a second by the engine (cluster/cluster_metrics.h): one
// writer. The *_total fields are the agent's own running counts, copied
// whole, hence gauges here and counters in the exposition.
inline constexpr std::array<std::string_view, 2> kClusterPermitKinds = {"message", "connection"};

struct ClusterMetrics {
  Gauge redis_up;     // 1: Redis answered the last batch in time
  Gauge fallback;     // 1: taking the node's share, not shared limits
  Gauge live_nodes;   // as Redis last counted them; 0: never seen
  Gauge leases_held;  // connection leases this node holds in Redis
  Gauge redis_round_trips_total;
  Gauge fallbacks_total;
  std::array<Gauge, kClusterPermitKinds.size()> permits_granted_total;  // by kind
};

}  // namespace volley::metrics

#endif  // VOLLEY_METRICS_METRICS_H_
