// exporter.cc - see exporter.h
#include "metrics/exporter.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "metrics/classify.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace volley::metrics {

namespace {

// From the build (metrics/CMakeLists.txt): the project's version and the git
// commit configured from ("unknown" outside a git checkout).
#ifndef VOLLEY_VERSION
#error "VOLLEY_VERSION is defined by metrics/CMakeLists.txt"
#endif
#ifndef VOLLEY_REVISION
#define VOLLEY_REVISION "unknown"
#endif
constexpr const char* kVolleyVersion = VOLLEY_VERSION;
constexpr const char* kVolleyRevision = VOLLEY_REVISION;

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void Add(MetricFamily* f, Labels labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f->type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f->metric.push_back(std::move(m));
}

void AddHistogram(MetricFamily* f, const std::vector<Histogram::Snapshot>& shards) {
  ClientMetric m;
  for (const Histogram::Snapshot& s : shards) {
    if (m.histogram.bucket.empty()) {
      for (double bound : s.bounds) m.histogram.bucket.push_back({0, bound});
      m.histogram.bucket.push_back({0, std::numeric_limits<double>::infinity()});
    }
    for (size_t i = 0; i < s.cumulative.size() && i < m.histogram.bucket.size(); ++i) {
      m.histogram.bucket[i].cumulative_count += s.cumulative[i];
    }
    m.histogram.sample_count += s.count;
    m.histogram.sample_sum += s.sum;
  }
  f->metric.push_back(std::move(m));
}

struct ProcessStats {
  double cpu_seconds = 0;
  double rss_bytes = 0;
};

// From /proc/self/stat (utime, stime in clock ticks) and /proc/self/statm
// (resident pages); zeros when unreadable.
ProcessStats ReadProcessStats() {
  ProcessStats p;
  std::ifstream stat("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // The command name may hold spaces and parentheses: fields count from the last ')'.
  if (const size_t close = text.rfind(')'); close != std::string::npos) {
    std::istringstream fields(text.substr(close + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    // After ')': state is field 3 of the man page; utime and stime are 14 and 15.
    for (int i = 3; i <= 15 && fields >> field; ++i) {
      if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
      if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
    }
    p.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  std::ifstream statm("/proc/self/statm");
  unsigned long long size = 0, resident = 0;
  if (statm >> size >> resident) {
    p.rss_bytes = static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE));
  }
  return p;
}

}  // namespace

class Exporter::Collector : public prometheus::Collectable {
 public:
  explicit Collector(ExporterSources sources)
      : sources_(std::move(sources)), started_(absl::Now()) {}

  std::vector<MetricFamily> Collect() const override;

 private:
  void CollectShards(std::vector<MetricFamily>* out) const;
  void CollectStore(std::vector<MetricFamily>* out) const;
  static void CollectFeedback(const FeedbackMetrics& f, std::vector<MetricFamily>* out);
  void CollectCluster(std::vector<MetricFamily>* out) const;

  ExporterSources sources_;
  absl::Time started_;
};

void Exporter::Collector::CollectShards(std::vector<MetricFamily>* out) const {
  const auto& shards = sources_.shards;
  auto sum = [&](auto get) {
    double total = 0;
    for (const ShardMetrics* s : shards) total += static_cast<double>(get(*s));
    return total;
  };

  MetricFamily deliveries = Family("volley_deliveries_total",
                                   "Outcomes recorded in the delivery log, by result.",
                                   MetricType::Counter);
  for (size_t r = 0; r < kDeliveryOutcomes; ++r) {
    Add(&deliveries, {{"result", std::string(kDeliveryStatusNames[r])}},
        sum([&](const ShardMetrics& s) { return s.deliveries[r].value(); }));
  }
  out->push_back(std::move(deliveries));

  // Per destination: summed by name across shards.
  MetricFamily per_dest = Family("volley_destination_deliveries_total",
                                 "Outcomes by destination (configured, the first "
                                 "max_destinations seen, else other) and result.",
                                 MetricType::Counter);
  std::vector<std::pair<std::string, std::array<double, kDeliveryOutcomes>>> dests;
  for (const ShardMetrics* s : shards) {
    for (const DestinationCounters* d : s->Destinations()) {
      auto it = std::find_if(dests.begin(), dests.end(),
                             [&](const auto& e) { return e.first == d->name; });
      if (it == dests.end()) {
        dests.emplace_back(d->name, std::array<double, kDeliveryOutcomes>{});
        it = dests.end() - 1;
      }
      for (size_t r = 0; r < kDeliveryOutcomes; ++r) {
        it->second[r] += static_cast<double>(d->deliveries[r].value());
      }
    }
  }
  for (const auto& [name, counts] : dests) {
    for (size_t r = 0; r < kDeliveryOutcomes; ++r) {
      Add(&per_dest,
          {{"destination", name}, {"result", std::string(kDeliveryStatusNames[r])}},
          counts[r]);
    }
  }
  out->push_back(std::move(per_dest));

  // Levels per destination, from the same names: ready recipients and
  // connections summed over the shards, the backoff level the highest of them
  // (each shard backs its own share of a site off).
  MetricFamily dest_ready = Family("volley_destination_recipients_ready",
                                   "Recipients routed to the destination and waiting in a "
                                   "shard's ready list for a connection, a token or backoff.",
                                   MetricType::Gauge);
  MetricFamily dest_conns = Family("volley_destination_connections",
                                   "SMTP connections open or opening to the destination.",
                                   MetricType::Gauge);
  MetricFamily dest_backoff = Family("volley_destination_backoff_level",
                                     "The destination's adaptive backoff level; 0: not backed "
                                     "off.",
                                     MetricType::Gauge);
  struct Levels {
    std::string name;
    double ready = 0, connections = 0, backoff_level = 0;
  };
  std::vector<Levels> levels;
  for (const ShardMetrics* s : shards) {
    for (const DestinationCounters* d : s->Destinations()) {
      auto it = std::find_if(levels.begin(), levels.end(),
                             [&](const Levels& e) { return e.name == d->name; });
      if (it == levels.end()) it = levels.insert(levels.end(), Levels{d->name});
      it->ready += static_cast<double>(d->ready.value());
      it->connections += static_cast<double>(d->connections.value());
      it->backoff_level =
          std::max(it->backoff_level, static_cast<double>(d->backoff_level.value()));
    }
  }
  for (const Levels& l : levels) {
    Add(&dest_ready, {{"destination", l.name}}, l.ready);
    Add(&dest_conns, {{"destination", l.name}}, l.connections);
    Add(&dest_backoff, {{"destination", l.name}}, l.backoff_level);
  }
  out->push_back(std::move(dest_ready));
  out->push_back(std::move(dest_conns));
  out->push_back(std::move(dest_backoff));

  // Failures by [[classify]] class. A class and result pair that cannot happen
  // (an expired record is always "expired", nothing else is) is left out unless
  // counted, which a reload's new rule naming a class "expired" could do.
  MetricFamily by_class = Family("volley_outcome_classes_total",
                                 "Bounced, deferred and expired outcomes by [[classify]] class.",
                                 MetricType::Counter);
  std::vector<std::pair<std::string, std::array<double, kClassifiedResults.size()>>> classes;
  for (const ShardMetrics* s : shards) {
    for (const ClassCounters* c : s->Classes()) {
      auto it = std::find_if(classes.begin(), classes.end(),
                             [&](const auto& e) { return e.first == c->name; });
      if (it == classes.end()) {
        it = classes.insert(classes.end(), {c->name, {}});
      }
      for (size_t r = 0; r < kClassifiedResults.size(); ++r) {
        it->second[r] += static_cast<double>(c->outcomes[r].value());
      }
    }
  }
  for (const auto& [name, counts] : classes) {
    for (size_t r = 0; r < kClassifiedResults.size(); ++r) {
      const bool expected = (kClassifiedResults[r] == DeliveryStatus::kExpired) ==
                            (name == kExpiredClass);
      if (!expected && counts[r] == 0) continue;
      Add(&by_class,
          {{"result", std::string(DeliveryStatusName(kClassifiedResults[r]))},
           {"class", name}},
          counts[r]);
    }
  }
  out->push_back(std::move(by_class));

  MetricFamily replies = Family("volley_smtp_replies_total",
                                "SMTP replies received, by code class.", MetricType::Counter);
  for (size_t c = 0; c < 4; ++c) {
    Add(&replies, {{"class", absl::StrCat(c + 2, "xx")}},
        sum([&](const ShardMetrics& s) { return s.replies[c].value(); }));
  }
  out->push_back(std::move(replies));

  std::vector<Histogram::Snapshot> tx, queued;
  for (const ShardMetrics* s : shards) {
    tx.push_back(s->transaction_seconds.snapshot());
    queued.push_back(s->queue_seconds.snapshot());
  }
  MetricFamily tx_family =
      Family("volley_transaction_duration_seconds",
             "From MAIL FROM sent to the transaction's last reply.", MetricType::Histogram);
  AddHistogram(&tx_family, tx);
  out->push_back(std::move(tx_family));
  MetricFamily queue_family = Family("volley_queue_time_seconds",
                                     "From the job's acceptance to a recipient's delivery.",
                                     MetricType::Histogram);
  AddHistogram(&queue_family, queued);
  out->push_back(std::move(queue_family));

  MetricFamily open = Family("volley_connections_open", "SMTP connections open or opening.",
                             MetricType::Gauge);
  Add(&open, {}, sum([](const ShardMetrics& s) { return s.connections_open.value(); }));
  out->push_back(std::move(open));
  MetricFamily opened = Family("volley_connections_opened_total", "SMTP connections attempted.",
                               MetricType::Counter);
  Add(&opened, {}, sum([](const ShardMetrics& s) { return s.connections_opened.value(); }));
  out->push_back(std::move(opened));
  MetricFamily budget = Family("volley_connection_budget",
                               "Connections volleyd may have open at once (file descriptor "
                               "limit less its reserve, or [delivery] max_connections).",
                               MetricType::Gauge);
  Add(&budget, {}, sum([](const ShardMetrics& s) { return s.connection_budget.value(); }));
  out->push_back(std::move(budget));
  MetricFamily budget_waiting = Family("volley_connection_budget_waiting",
                                       "Destinations waiting for the connection budget now.",
                                       MetricType::Gauge);
  Add(&budget_waiting, {},
      sum([](const ShardMetrics& s) { return s.budget_waiting.value(); }));
  out->push_back(std::move(budget_waiting));
  MetricFamily budget_waits = Family("volley_connection_budget_waits_total",
                                     "Times a destination began to wait for the connection budget.",
                                     MetricType::Counter);
  Add(&budget_waits, {}, sum([](const ShardMetrics& s) { return s.budget_waits.value(); }));
  out->push_back(std::move(budget_waits));
  MetricFamily bytes_limit = Family("volley_message_bytes_limit",
                                    "Bytes of rendered messages transactions under way may hold "
                                    "([delivery] max_message_bytes_in_flight; 0: no bound).",
                                    MetricType::Gauge);
  Add(&bytes_limit, {}, sum([](const ShardMetrics& s) { return s.message_bytes_limit.value(); }));
  out->push_back(std::move(bytes_limit));
  MetricFamily bytes_now = Family("volley_message_bytes_in_flight",
                                  "Bytes of rendered messages held by transactions under way.",
                                  MetricType::Gauge);
  Add(&bytes_now, {},
      sum([](const ShardMetrics& s) { return s.message_bytes_in_flight.value(); }));
  out->push_back(std::move(bytes_now));
  MetricFamily bytes_peak = Family("volley_message_bytes_in_flight_peak",
                                   "The most message bytes each shard held at once since start, "
                                   "summed over the shards.",
                                   MetricType::Gauge);
  Add(&bytes_peak, {}, sum([](const ShardMetrics& s) { return s.message_bytes_peak.value(); }));
  out->push_back(std::move(bytes_peak));
  MetricFamily bytes_waits = Family("volley_message_bytes_waits_total",
                                    "Times a destination's next transaction began to wait for "
                                    "message bytes in flight to be given back.",
                                    MetricType::Counter);
  Add(&bytes_waits, {}, sum([](const ShardMetrics& s) { return s.message_bytes_waits.value(); }));
  out->push_back(std::move(bytes_waits));
  MetricFamily pipelined = Family("volley_transactions_pipelined_total",
                                  "Transactions started behind another under way on their "
                                  "connection, without waiting for its replies.",
                                  MetricType::Counter);
  Add(&pipelined, {}, sum([](const ShardMetrics& s) { return s.transactions_pipelined.value(); }));
  out->push_back(std::move(pipelined));
  MetricFamily fd_out = Family("volley_fd_exhausted_total",
                               "Times socket() failed for lack of file descriptors (EMFILE, "
                               "ENFILE) or socket memory; connections waited.",
                               MetricType::Counter);
  Add(&fd_out, {}, sum([](const ShardMetrics& s) { return s.fd_exhausted.value(); }));
  out->push_back(std::move(fd_out));
  MetricFamily no_buffer = Family("volley_receive_buffers_exhausted_total",
                                  "Receives that found every buffer of the shard's receive buffer "
                                  "ring held and used a buffer of the connection's own.",
                                  MetricType::Counter);
  Add(&no_buffer, {},
      sum([](const ShardMetrics& s) { return s.receive_buffers_exhausted.value(); }));
  out->push_back(std::move(no_buffer));
  MetricFamily failed = Family("volley_connections_failed_total",
                               "Connections that ended before their session was ready, by reason.",
                               MetricType::Counter);
  for (size_t f = 0; f < kConnFailures; ++f) {
    Add(&failed, {{"reason", std::string(ConnFailureName(static_cast<ConnFailure>(f)))}},
        sum([&](const ShardMetrics& s) { return s.connections_failed[f].value(); }));
  }
  out->push_back(std::move(failed));

  MetricFamily tls = Family("volley_tls_sessions_total", "STARTTLS handshakes completed, by version.",
                            MetricType::Counter);
  for (size_t v = 0; v < kTlsVersions.size(); ++v) {
    Add(&tls, {{"version", std::string(kTlsVersions[v])}},
        sum([&](const ShardMetrics& s) { return s.tls_sessions[v].value(); }));
  }
  out->push_back(std::move(tls));

  MetricFamily handshakes =
      Family("volley_tls_handshakes_total",
             "STARTTLS handshakes completed, full or resuming a saved session.", MetricType::Counter);
  for (size_t k = 0; k < kTlsHandshakeKinds.size(); ++k) {
    Add(&handshakes, {{"kind", std::string(kTlsHandshakeKinds[k])}},
        sum([&](const ShardMetrics& s) { return s.tls_handshakes[k].value(); }));
  }
  out->push_back(std::move(handshakes));

  MetricFamily dns = Family("volley_dns_queries_total", "DNS questions answered, by result.",
                            MetricType::Counter);
  for (size_t k = 0; k < kDnsResults.size(); ++k) {
    Add(&dns, {{"result", std::string(kDnsResults[k])}},
        sum([&](const ShardMetrics& s) { return s.dns_queries[k].value(); }));
  }
  out->push_back(std::move(dns));
  MetricFamily cache = Family("volley_dns_cache_lookups_total",
                              "DNS cache lookups, by result.", MetricType::Counter);
  Add(&cache, {{"result", "hit"}}, sum([](const ShardMetrics& s) { return s.dns_cache_hits.value(); }));
  Add(&cache, {{"result", "miss"}},
      sum([](const ShardMetrics& s) { return s.dns_cache_misses.value(); }));
  out->push_back(std::move(cache));
  MetricFamily sent = Family("volley_dns_lookups_sent_total",
                             "DNS questions sent to servers (CNAME follow-ups included).",
                             MetricType::Counter);
  Add(&sent, {}, sum([](const ShardMetrics& s) { return s.dns_sent.value(); }));
  out->push_back(std::move(sent));
  MetricFamily dns_queued = Family("volley_dns_lookups_queued",
                                   "DNS questions waiting for their turn ([dns] max_pending "
                                   "are in flight).",
                                   MetricType::Gauge);
  Add(&dns_queued, {}, sum([](const ShardMetrics& s) { return s.dns_queued.value(); }));
  out->push_back(std::move(dns_queued));
  MetricFamily dns_flying = Family("volley_dns_lookups_in_flight",
                                   "DNS questions sent and not yet answered.", MetricType::Gauge);
  Add(&dns_flying, {}, sum([](const ShardMetrics& s) { return s.dns_in_flight.value(); }));
  out->push_back(std::move(dns_flying));
  MetricFamily dns_full = Family("volley_dns_queue_full_total",
                                 "DNS questions refused because the wait queue was full "
                                 "([dns] max_queued); their recipients were deferred.",
                                 MetricType::Counter);
  Add(&dns_full, {}, sum([](const ShardMetrics& s) { return s.dns_queue_full.value(); }));
  out->push_back(std::move(dns_full));

  MetricFamily waits = Family("volley_rate_limit_waits_total",
                              "Times a destination's work began to wait for its rate limit.",
                              MetricType::Counter);
  Add(&waits, {{"limit", "messages"}},
      sum([](const ShardMetrics& s) { return s.rate_limit_waits[0].value(); }));
  Add(&waits, {{"limit", "connections"}},
      sum([](const ShardMetrics& s) { return s.rate_limit_waits[1].value(); }));
  out->push_back(std::move(waits));
  MetricFamily backoff = Family("volley_backoff_events_total",
                                "Destinations backed off a level, or suspended, by a reply.",
                                MetricType::Counter);
  Add(&backoff, {{"action", "backoff"}},
      sum([](const ShardMetrics& s) { return s.backoff_events[0].value(); }));
  Add(&backoff, {{"action", "suspend"}},
      sum([](const ShardMetrics& s) { return s.backoff_events[1].value(); }));
  out->push_back(std::move(backoff));

  MetricFamily busy = Family("volley_shard_busy_seconds_total",
                             "Time the shard's loop spent working, not waiting in io_uring.",
                             MetricType::Counter);
  for (size_t i = 0; i < shards.size(); ++i) {
    Add(&busy, {{"shard", absl::StrCat(i)}}, static_cast<double>(shards[i]->busy_nanos.value()) / 1e9);
  }
  out->push_back(std::move(busy));
}

void Exporter::Collector::CollectStore(std::vector<MetricFamily>* out) const {
  const double in_flight = [&] {
    double n = 0;
    for (const ShardMetrics* s : sources_.shards) n += static_cast<double>(s->in_flight.value());
    return n;
  }();
  StoreSnapshot store = sources_.store ? sources_.store() : StoreSnapshot{};
  // Before the `ok` check: these matter most when the queue misbehaves.
  MetricFamily stalled = Family("volley_queue_writes_stalled",
                                "1 while outcome writes (delivery log or queue) fail and are "
                                "retried.",
                                MetricType::Gauge);
  Add(&stalled, {}, store.writes_stalled ? 1.0 : 0.0);
  out->push_back(std::move(stalled));
  MetricFamily queue_errors = Family("volley_queue_write_errors_total",
                                     "Writes the queue (RocksDB) refused, each try counted.",
                                     MetricType::Counter);
  Add(&queue_errors, {}, static_cast<double>(store.queue_write_errors));
  out->push_back(std::move(queue_errors));
  MetricFamily log_errors = Family("volley_delivery_log_write_errors_total",
                                   "Delivery-log writes that failed, each try counted.",
                                   MetricType::Counter);
  Add(&log_errors, {}, static_cast<double>(store.log_write_errors));
  out->push_back(std::move(log_errors));
  MetricFamily recipients = Family("volley_recipients",
                                   "Recipients by state: queued (no final outcome yet), "
                                   "in_flight (taken by a shard), deferred (last attempt deferred).",
                                   MetricType::Gauge);
  Add(&recipients, {{"state", "in_flight"}}, in_flight);
  if (!store.ok) {
    out->push_back(std::move(recipients));
    return;
  }
  double queued = 0, deferred = 0;
  absl::Time oldest = absl::InfiniteFuture();
  for (const JobSnapshot& j : store.jobs) {
    queued += static_cast<double>(j.pending);
    deferred += static_cast<double>(j.deferred);
    if (j.pending > 0) oldest = std::min(oldest, j.queued_at);
  }
  Add(&recipients, {{"state", "queued"}}, queued);
  Add(&recipients, {{"state", "deferred"}}, deferred);
  out->push_back(std::move(recipients));

  MetricFamily age = Family("volley_queue_oldest_age_seconds",
                            "Age of the oldest job with recipients still queued; 0 when none.",
                            MetricType::Gauge);
  Add(&age, {}, oldest == absl::InfiniteFuture()
                    ? 0.0
                    : std::max(0.0, absl::ToDoubleSeconds(absl::Now() - oldest)));
  out->push_back(std::move(age));

  MetricFamily jobs = Family("volley_jobs", "Unfinished jobs, by state.", MetricType::Gauge);
  for (const char* state : {"ready", "paused", "cancelling"}) {
    Add(&jobs, {{"state", state}},
        static_cast<double>(std::count_if(store.jobs.begin(), store.jobs.end(),
                                          [&](const JobSnapshot& j) { return j.state == state; })));
  }
  out->push_back(std::move(jobs));

  // The newest max_jobs jobs: label cardinality stays bounded however many run.
  std::sort(store.jobs.begin(), store.jobs.end(),
            [](const JobSnapshot& a, const JobSnapshot& b) { return a.queued_at > b.queued_at; });
  if (store.jobs.size() > sources_.max_jobs) store.jobs.resize(sources_.max_jobs);
  MetricFamily progress = Family("volley_job_recipients",
                                 "Each unfinished job's durable progress, by state.",
                                 MetricType::Gauge);
  for (const JobSnapshot& j : store.jobs) {
    const std::pair<const char*, uint64_t> counts[] = {
        {"total", j.total},         {"delivered", j.delivered}, {"bounced", j.bounced},
        {"expired", j.expired},     {"cancelled", j.cancelled}, {"deferred", j.deferred},
        {"pending", j.pending}};
    for (const auto& [state, n] : counts) {
      Add(&progress, {{"job_id", j.id}, {"state", state}}, static_cast<double>(n));
    }
  }
  out->push_back(std::move(progress));

  // Feedback per job, finished jobs included (complaints arrive for days after
  // the last message went out); the newest max_jobs, like the progress above.
  std::sort(store.feedback.begin(), store.feedback.end(),
            [](const JobFeedback& a, const JobFeedback& b) { return a.queued_at > b.queued_at; });
  if (store.feedback.size() > sources_.max_jobs) store.feedback.resize(sources_.max_jobs);
  MetricFamily job_feedback = Family(
      "volley_job_feedback", "What came back for each job, and its suppressed recipients, by event.",
      MetricType::Gauge);
  MetricFamily complaint_rate = Family(
      "volley_job_complaint_rate",
      "Complaints per delivered recipient of each job (0 before the first delivery).",
      MetricType::Gauge);
  for (const JobFeedback& j : store.feedback) {
    const std::pair<const char*, uint64_t> counts[] = {{"bounced_async", j.bounced_async},
                                                       {"complained", j.complained},
                                                       {"unsubscribed", j.unsubscribed},
                                                       {"suppressed", j.suppressed}};
    for (const auto& [event, n] : counts) {
      Add(&job_feedback, {{"job_id", j.id}, {"event", event}}, static_cast<double>(n));
    }
    Add(&complaint_rate, {{"job_id", j.id}},
        j.delivered == 0 ? 0.0
                         : static_cast<double>(j.complained) / static_cast<double>(j.delivered));
  }
  out->push_back(std::move(job_feedback));
  out->push_back(std::move(complaint_rate));

  auto gauge = [&](const char* name, const char* help, double v) {
    MetricFamily f = Family(name, help, MetricType::Gauge);
    Add(&f, {}, v);
    out->push_back(std::move(f));
  };
  gauge("volley_rocksdb_sst_bytes", "Size of the queue's SST files.",
        static_cast<double>(store.sst_bytes));
  gauge("volley_rocksdb_pending_compaction_bytes",
        "RocksDB's estimate of the bytes compaction still has to rewrite.",
        static_cast<double>(store.pending_compaction_bytes));
  gauge("volley_rocksdb_write_stopped", "1 while RocksDB stops writes.",
        store.write_stopped ? 1.0 : 0.0);
  MetricFamily stalls = Family("volley_rocksdb_write_stalls_total",
                               "Times RocksDB started delaying or stopping writes.",
                               MetricType::Counter);
  Add(&stalls, {}, static_cast<double>(store.write_stalls));
  out->push_back(std::move(stalls));
  MetricFamily disk = Family("volley_disk_free_bytes",
                             "Free bytes on the queue's and the spool's filesystems.",
                             MetricType::Gauge);
  Add(&disk, {{"path", "queue"}}, static_cast<double>(store.queue_free_bytes));
  Add(&disk, {{"path", "spool"}}, static_cast<double>(store.spool_free_bytes));
  out->push_back(std::move(disk));
  gauge("volley_disk_free_floor_bytes", "[queue] min_free_space: intake pauses below it.",
        static_cast<double>(store.free_floor_bytes));
}

void Exporter::Collector::CollectFeedback(const FeedbackMetrics& f,
                                          std::vector<MetricFamily>* out) {
  MetricFamily reports = Family("volley_feedback_reports_total",
                                "Messages to the inbound listener and unsubscribe requests, by "
                                "what they were.",
                                MetricType::Counter);
  for (size_t k = 0; k < kReportKinds.size(); ++k) {
    Add(&reports, {{"kind", std::string(kReportKinds[k])}},
        static_cast<double>(f.reports[k].value()));
  }
  out->push_back(std::move(reports));
  MetricFamily events = Family("volley_feedback_events_total",
                               "Feedback events written to the delivery log, by event and "
                               "destination (the first max_destinations seen, else other).",
                               MetricType::Counter);
  for (const FeedbackMetrics::PerDestination& d : f.Destinations()) {
    for (size_t e = 0; e < kFeedbackEvents; ++e) {
      Add(&events,
          {{"event", std::string(kDeliveryStatusNames[kDeliveryOutcomes + e])},
           {"destination", d.name}},
          static_cast<double>(d.events[e]));
    }
  }
  out->push_back(std::move(events));
  MetricFamily added = Family("volley_suppressions_added_total",
                              "Entries the feedback loop added to the suppression list, by "
                              "reason.",
                              MetricType::Counter);
  for (size_t r = 0; r < kSuppressionReasons.size(); ++r) {
    Add(&added, {{"reason", std::string(kSuppressionReasons[r])}},
        static_cast<double>(f.suppressions_added[r].value()));
  }
  out->push_back(std::move(added));
  MetricFamily paused = Family("volley_jobs_paused_for_complaints_total",
                               "Jobs paused by [inbound] pause_on_complaint_rate.",
                               MetricType::Counter);
  Add(&paused, {}, static_cast<double>(f.jobs_paused.value()));
  out->push_back(std::move(paused));
}

void Exporter::Collector::CollectCluster(std::vector<MetricFamily>* out) const {
  ClusterMetrics c;
  if (sources_.cluster) sources_.cluster(&c);
  const auto one = [out](const char* name, const char* help, MetricType type, const Gauge& g) {
    MetricFamily f = Family(name, help, type);
    Add(&f, {}, static_cast<double>(g.value()));
    out->push_back(std::move(f));
  };
  one("volley_cluster_redis_up", "1 when Redis answered the cluster agent's last batch in time.",
      MetricType::Gauge, c.redis_up);
  one("volley_cluster_fallback",
      "1 while the node takes its fallback share of each cluster-wide limit.", MetricType::Gauge,
      c.fallback);
  one("volley_cluster_live_nodes", "Nodes Redis saw alive at the last heartbeat.",
      MetricType::Gauge, c.live_nodes);
  one("volley_cluster_leases_held", "Connection leases this node holds in Redis.",
      MetricType::Gauge, c.leases_held);
  one("volley_cluster_redis_round_trips_total", "Round trips the cluster agent made to Redis.",
      MetricType::Counter, c.redis_round_trips_total);
  one("volley_cluster_fallbacks_total", "Times the node fell back to its share of the limits.",
      MetricType::Counter, c.fallbacks_total);
  MetricFamily permits = Family("volley_cluster_permits_granted_total",
                                "Permits the cluster agent granted to the node's shards, by kind.",
                                MetricType::Counter);
  for (size_t k = 0; k < kClusterPermitKinds.size(); ++k) {
    Add(&permits, {{"kind", std::string(kClusterPermitKinds[k])}},
        static_cast<double>(c.permits_granted_total[k].value()));
  }
  out->push_back(std::move(permits));
}

std::vector<MetricFamily> Exporter::Collector::Collect() const {
  std::vector<MetricFamily> out;
  CollectShards(&out);
  CollectStore(&out);
  if (sources_.suspended_destinations) {
    MetricFamily suspended = Family("volley_destinations_suspended",
                                    "Destinations (recipient domains) an operator suspended now.",
                                    MetricType::Gauge);
    Add(&suspended, {}, static_cast<double>(sources_.suspended_destinations()));
    out.push_back(std::move(suspended));
  }
  if (sources_.intake != nullptr) {
    const IntakeMetrics& in = *sources_.intake;
    MetricFamily jobs = Family("volley_intake_jobs_total", "Job files taken in, by result.",
                               MetricType::Counter);
    Add(&jobs, {{"result", "accepted"}}, static_cast<double>(in.jobs_accepted.value()));
    Add(&jobs, {{"result", "failed"}}, static_cast<double>(in.jobs_failed.value()));
    out.push_back(std::move(jobs));
    MetricFamily rcpts = Family("volley_intake_recipients_total",
                                "Recipient lines of accepted jobs, by result.", MetricType::Counter);
    Add(&rcpts, {{"result", "accepted"}}, static_cast<double>(in.recipients_accepted.value()));
    Add(&rcpts, {{"result", "rejected"}}, static_cast<double>(in.recipients_rejected.value()));
    Add(&rcpts, {{"result", "suppressed"}},
        static_cast<double>(in.recipients_suppressed.value()));
    out.push_back(std::move(rcpts));
  }
  if (sources_.feedback != nullptr) CollectFeedback(*sources_.feedback, &out);
  CollectCluster(&out);
  if (sources_.reloads != nullptr) {
    const ReloadMetrics& r = *sources_.reloads;
    MetricFamily reloads = Family("volley_config_reloads_total",
                                  "Config reloads (SIGHUP), by result.", MetricType::Counter);
    Add(&reloads, {{"result", "ok"}}, static_cast<double>(r.ok.value()));
    Add(&reloads, {{"result", "failed"}}, static_cast<double>(r.failed.value()));
    out.push_back(std::move(reloads));
    MetricFamily last = Family("volley_config_last_reload_success_timestamp_seconds",
                               "When the config was last reloaded, seconds since the epoch; 0: "
                               "never since start.",
                               MetricType::Gauge);
    Add(&last, {}, static_cast<double>(r.last_success_seconds.value()));
    out.push_back(std::move(last));
  }
  const ProcessStats p = ReadProcessStats();
  MetricFamily cpu = Family("process_cpu_seconds_total", "User and system CPU time of volleyd.",
                            MetricType::Counter);
  Add(&cpu, {}, p.cpu_seconds);
  out.push_back(std::move(cpu));
  MetricFamily rss = Family("process_resident_memory_bytes", "Resident memory of volleyd.",
                            MetricType::Gauge);
  Add(&rss, {}, p.rss_bytes);
  out.push_back(std::move(rss));
  if (sources_.endpoint) {
    // Under the names and help texts prometheus-cpp's Exposer used, so that
    // dashboards built on them keep working.
    const EndpointStats e = sources_.endpoint();
    MetricFamily bytes = Family("exposer_transferred_bytes_total",
                                "Transferred bytes to metrics services", MetricType::Counter);
    Add(&bytes, {}, static_cast<double>(e.transferred_bytes));
    out.push_back(std::move(bytes));
    MetricFamily scrapes = Family("exposer_scrapes_total",
                                  "Number of times metrics were scraped", MetricType::Counter);
    Add(&scrapes, {}, static_cast<double>(e.scrapes));
    out.push_back(std::move(scrapes));
    MetricFamily latencies = Family("exposer_request_latencies",
                                    "Latencies of serving scrape requests, in microseconds",
                                    MetricType::Summary);
    ClientMetric m;
    m.summary.sample_count = e.scrapes;
    m.summary.sample_sum = e.latency_microseconds_sum;
    latencies.metric.push_back(std::move(m));
    out.push_back(std::move(latencies));
  }
  MetricFamily build = Family("volley_build_info",
                              "Always 1; the labels say which volleyd this is.",
                              MetricType::Gauge);
  Add(&build, {{"version", kVolleyVersion}, {"revision", kVolleyRevision}}, 1);
  out.push_back(std::move(build));
  MetricFamily start = Family("process_start_time_seconds",
                              "When volleyd started, seconds since the epoch.", MetricType::Gauge);
  Add(&start, {}, absl::ToDoubleSeconds(started_ - absl::UnixEpoch()));
  out.push_back(std::move(start));
  if (!sources_.node.empty()) {
    for (MetricFamily& f : out) {
      if (!f.name.starts_with("volley_")) continue;
      for (ClientMetric& m : f.metric) m.label.push_back({"node", sources_.node});
    }
  }
  return out;
}

std::unique_ptr<Exporter> Exporter::Create(ExporterSources sources) {
  std::unique_ptr<Exporter> e(new Exporter());
  e->collector_ = std::make_shared<Collector>(std::move(sources));
  return e;
}

Exporter::~Exporter() = default;

std::string Exporter::Render() const {
  return prometheus::TextSerializer().Serialize(collector_->Collect());
}

}  // namespace volley::metrics
