// engine.cc - volleyd's wiring: open the spool, queue and log, recover, start the
// intake, the committer, the admin API, the exporter and one Shard per thread.
#include "engine/engine.h"

#include <pthread.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/dir_lock.h"
#include "base/log.h"
#include "base/status.h"
#include "absl/strings/str_join.h"
#include "cluster/agent.h"
#include "cluster/allowance.h"
#include "cluster/cluster_metrics.h"
#include "dns/routes.h"
#include "engine/admin.h"
#include "engine/destination_control.h"
#include "engine/boards.h"
#include "engine/committer.h"
#include "engine/compose.h"
#include "engine/feedback.h"
#include "engine/inbound.h"
#include "engine/fd_budget.h"
#include "engine/host_name.h"
#include "engine/http/server.h"
#include "engine/intake.h"
#include "engine/metrics_endpoint.h"
#include "engine/recovery.h"
#include "engine/reload.h"
#include "engine/shard.h"
#include "engine/unsubscribe.h"
#include "metrics/classify.h"
#include "metrics/delivery_log.h"
#include "metrics/exporter.h"
#include "metrics/metrics.h"
#include "queue/queue.h"
#include "queue/spool.h"
#include "queue/suppression.h"

namespace volley::engine {
namespace {

// ReadStoreSnapshot - the queue's side of a scrape (metrics/exporter.h), on the
// exporter's thread: RocksDB is safe to read from any thread.
metrics::StoreSnapshot ReadStoreSnapshot(queue::Queue& q, const Config& config) {
  metrics::StoreSnapshot s;
  absl::StatusOr<std::vector<queue::JobRecord>> jobs = q.ListJobs();
  if (!jobs.ok()) return s;
  for (const queue::JobRecord& record : *jobs) {
    if (record.state == queue::JobState::kLoading) continue;
    absl::StatusOr<queue::JobProgress> p = q.ReadProgress(record.job_no);
    if (!p.ok()) return s;
    s.feedback.push_back(metrics::JobFeedback{record.id, record.queued_at, p->delivered,
                                              p->suppressed, p->bounced_async, p->complained,
                                              p->unsubscribed});
    if (record.state != queue::JobState::kReady && record.state != queue::JobState::kCancelled) {
      continue;  // finished
    }
    metrics::JobSnapshot j;
    j.id = record.id;
    j.state = record.state == queue::JobState::kCancelled ? "cancelling"
              : record.paused                             ? "paused"
                                                          : "ready";
    j.queued_at = record.queued_at;
    j.total = p->total;
    j.delivered = p->delivered;
    j.bounced = p->bounced;
    j.expired = p->expired;
    j.cancelled = p->cancelled;
    j.deferred = p->deferred;
    j.pending = p->pending();
    s.jobs.push_back(std::move(j));
  }
  const queue::Queue::StoreStats stats = q.Stats();
  s.sst_bytes = stats.sst_bytes;
  s.pending_compaction_bytes = stats.pending_compaction_bytes;
  s.write_stalls = stats.write_stalls;
  s.write_stopped = stats.write_stopped;
  s.queue_write_errors = stats.write_errors;
  s.queue_free_bytes = queue::FreeBytes(config.queue_dir).value_or(uint64_t{0});
  s.spool_free_bytes = queue::FreeBytes(config.spool_dir).value_or(uint64_t{0});
  s.free_floor_bytes = config.min_free_space;
  s.ok = true;
  return s;
}

// ReadUint64File - the number a /proc/sys file holds, or nullopt.
std::optional<uint64_t> ReadUint64File(const char* path) {
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return std::nullopt;
  unsigned long long v = 0;
  const bool read = std::fscanf(f, "%llu", &v) == 1;
  std::fclose(f);
  if (!read) return std::nullopt;
  return static_cast<uint64_t>(v);
}

// ShardCount - [delivery] shards, 0 meaning one per CPU; never more than the
// queue has partitions.
size_t ShardCount(const Config& config) {
  size_t n = static_cast<size_t>(config.delivery.shards);
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  return std::min<size_t>(n, queue::kPartitions);
}

// Partitioner - the queue partition of a recipient's domain: a statically
// routed domain goes by its route, so that every domain sharing the route's
// connection pool and limits lands on one shard; any other domain by itself.
// `routes` follows reloads (engine/reload.h keeps every generation alive).
queue::Spool::Partitioner Partitioner(const std::atomic<const dns::StaticRoutes*>* routes) {
  return [routes](std::string_view domain) {
    const dns::StaticRoutes* now = routes->load(std::memory_order_acquire);
    if (const dns::Route* route = now->Find(domain)) return queue::PartitionOf(route->name);
    return queue::PartitionOf(domain);
  };
}

// PublishFeedbackPolicy - a reload's feedback-loop policy ([suppression]
// soft-bounce keys and scope, [inbound] complaint-rate keys) to the list and
// the processor, each an atomic swap. The values were checked when the file
// was parsed, so SetPolicy refusing them would be a bug: logged, and the list
// keeps its policy.
void PublishFeedbackPolicy(const Config& config, queue::SuppressionList* suppression,
                           FeedbackProcessor* feedback) {
  if (suppression != nullptr) {
    const absl::Status st = suppression->SetPolicy(config.suppression.options);
    if (!st.ok()) base::LogError("reload: [suppression] kept: %s", base::StdSv(st.message()));
  }
  if (feedback != nullptr) {
    FeedbackPolicy policy = *feedback->Policy();
    policy.pause_on_complaint_rate = config.inbound.pause_on_complaint_rate;
    policy.min_delivered_for_rate = static_cast<uint64_t>(config.inbound.min_delivered_for_rate);
    feedback->SetPolicy(std::move(policy));
  }
}

}  // namespace

absl::Status Engine::Run() {
  // One volleyd per spool and per delivery log (base/dir_lock.h), before any
  // file is read or written: two would take the same job files and mail every
  // recipient twice, or mix their outcomes in one log that recovery replays.
  // The queue's and the suppression list's RocksDB lock their own folders.
  ASSIGN_OR_RETURN(const base::DirLock spool_lock,
                   base::DirLock::Acquire(config_.spool_dir, "spool", "volleyd"));
  std::optional<base::DirLock> log_lock;
  if (std::error_code ec; !std::filesystem::equivalent(config_.spool_dir, config_.log_dir, ec)) {
    ASSIGN_OR_RETURN(log_lock, base::DirLock::Acquire(config_.log_dir, "log folder", "volleyd"));
  }
  ASSIGN_OR_RETURN(auto routes, dns::StaticRoutes::Create(config_.routes));
  std::atomic<const dns::StaticRoutes*> current_routes{routes.get()};
  // Keys first: a missing or weak key stops volleyd before it takes anything in.
  std::vector<std::string> key_warnings;
  ASSIGN_OR_RETURN(const Credentials credentials, Credentials::Load(config_, &key_warnings));
  for (const std::string& w : key_warnings) {
    base::LogWarning("%s", w);
  }
  ASSIGN_OR_RETURN(queue::Spool spool, queue::Spool::Open(config_.spool_dir));
  spool.SetPartitioner(Partitioner(&current_routes));
  spool.SetSettleTime(config_.intake.settle_time);
  // A reload's [[dkim]] keys decide intake's check too (one-click unsubscribe
  // needs a key for the From domain); the reloader keeps each one alive.
  std::atomic<const Credentials*> current_credentials{&credentials};
  spool.SetJobCheck([&current_credentials](const queue::JobHeader& h, const queue::Template& t) {
    return current_credentials.load(std::memory_order_acquire)->CheckJob(h, t);
  });
  queue::QueueOptions qopts;
  qopts.sync_outcomes = config_.sync_outcomes;
  qopts.max_open_files = config_.queue_max_open_files;
  ASSIGN_OR_RETURN(auto queue, queue::Queue::Open(config_.queue_dir, qopts));
  // The suppression list (queue/suppression.h): a database of its own. A path
  // that cannot be opened stops volleyd here: sending without the list would
  // mail addresses that complained or unsubscribed. `suppression` outlives the
  // shards, the intake and the admin API, which all use it.
  absl::StatusOr<std::unique_ptr<queue::SuppressionList>> opened =
      queue::SuppressionList::Open(config_.suppression.path, config_.suppression.options);
  if (!opened.ok()) {
    return absl::Status(opened.status().code(),
                        absl::StrCat("[suppression] path: ", opened.status().message()));
  }
  const std::unique_ptr<queue::SuppressionList> suppression = *std::move(opened);
  metrics::DeliveryLogOptions log_options;
  log_options.max_size = config_.delivery_log.max_size;
  log_options.max_age = config_.delivery_log.max_age;
  log_options.keep = config_.delivery_log.keep;
  ASSIGN_OR_RETURN(auto log, metrics::DeliveryLog::Open(config_.log_dir, log_options));
  ASSIGN_OR_RETURN(const metrics::Classifier classifier,
                   metrics::Classifier::Create(config_.classify));
  ASSIGN_OR_RETURN(std::vector<std::string> forgotten, spool.ForgetAbandonedIntakes(*queue));
  for (const std::string& id : forgotten) {
    base::LogInfo("job \"%s\": its intake was interrupted and its file is no longer in "
                  "incoming/; what was queued of it is dropped (drop the file again to send it)",
                  id);
  }
  RETURN_IF_ERROR(ReplayUnappliedOutcomes(queue.get(), log.get(), config_.retry));
  const size_t shard_count = ShardCount(config_);
  FdReserve reserve = DefaultFdReserve(static_cast<size_t>(config_.queue_max_open_files),
                                       config_.dns.resolver.servers.size());
  // The endpoints' caps, lowered under a small descriptor limit so that
  // delivery keeps its share (docs/config.md, [metrics] max_connections).
  const auto endpoint_cap = [](const char* table, int configured) {
    const int cap = EndpointCap(CurrentFileLimit(), configured);
    if (cap < configured) {
      base::LogWarning("[%s] max_connections %d lowered to %d for the file descriptor limit %d",
                       table, configured, cap, CurrentFileLimit());
    }
    return cap;
  };
  const int admin_cap = endpoint_cap("admin", config_.admin_max_connections);
  const int metrics_cap = endpoint_cap("metrics", config_.metrics_max_connections);
  reserve.endpoints =
      EndpointFiles(admin_cap, metrics_cap) +
      (config_.unsubscribe.listen.empty()
           ? 0
           : http::DescriptorsAtMost(kUnsubscribeMaxConnections, config_.unsubscribe.threads));
  // The suppression list is a second RocksDB: its table files and its own
  // (the same 16 as the queue's: logs, MANIFEST, LOCK, LOG, a flush and a
  // compaction writing), counted with the queue's.
  reserve.queue += static_cast<size_t>(config_.suppression.options.max_open_files) + 16;
  ASSIGN_OR_RETURN(const ConnectionBudget budget,
                   PlanConnectionBudget(CurrentFileLimit(), shard_count, reserve,
                                        static_cast<size_t>(config_.delivery.max_connections)));
  base::LogInfo("%s", DescribeBudget(budget, reserve, shard_count));
  if (std::optional<uint64_t> granted = ReadUint64File("/proc/sys/net/core/rmem_max");
      granted.has_value() && *granted < config_.dns.resolver.receive_buffer) {
    base::LogWarning(
        "net.core.rmem_max is %d bytes, below [dns] receive_buffer (%d): answers to many DNS "
        "lookups at once may be dropped, each then waiting [dns] timeout; raise it (sysctl "
        "net.core.rmem_max=%d) or lower [dns] max_pending",
        *granted, config_.dns.resolver.receive_buffer, config_.dns.resolver.receive_buffer);
  }
  // A lane per shard, and one more for the threads that are not shards: the
  // feedback loop's events and intake's `suppressed` records (engine/feedback.h).
  Committer committer(queue.get(), log.get(), shard_count + 1);
  RETURN_IF_ERROR(committer.Start());
  FeedbackRecorder recorder(&committer, shard_count);
  JobBoard board(shard_count);
  SiteShares sites(shard_count);
  ReadyJobs ready_jobs(shard_count);
  std::vector<std::string> configured;
  for (const auto& [name, policy] : config_.destinations) configured.push_back(name);
  metrics::MetricsOptions metrics_options;
  metrics_options.max_destinations = static_cast<size_t>(config_.metrics_top_destinations);
  metrics_options.outcome_classes = classifier.Classes();
  metrics::IntakeMetrics intake_metrics;
  DestinationStates destination_states(shard_count);
  // Suspensions and backoff levels kept in the queue, read before any shard
  // takes a recipient (engine/destination_control.h).
  DestinationControl destination_control(queue.get(), shard_count);
  RETURN_IF_ERROR(destination_control.Load(absl::Now()));
  destination_states.SetControl(&destination_control);
  // SIGHUP (engine/reload.h): each checked generation goes to every shard's
  // mailbox, and intake's partitioner follows its routes.
  std::vector<std::unique_ptr<ConfigMailbox>> reload_boxes;
  for (size_t i = 0; i < shard_count; ++i) {
    ASSIGN_OR_RETURN(auto box, ConfigMailbox::Create(kReloadMailboxCapacity));
    reload_boxes.push_back(std::move(box));
  }
  metrics::ReloadMetrics reload_metrics;
  // Made below; set before the reload thread starts, which is what reads it.
  FeedbackProcessor* feedback_for_reload = nullptr;
  ConfigReloader reloader(
      config_path_, config_text_, config_, credentials,
      [&reload_boxes, &current_routes, &current_credentials, &suppression,
       &feedback_for_reload](const std::shared_ptr<const LiveConfig>& live) {
        current_routes.store(live->routes.get(), std::memory_order_release);
        PublishFeedbackPolicy(live->config, suppression.get(), feedback_for_reload);
        if (live->credentials != nullptr) {
          current_credentials.store(live->credentials.get(), std::memory_order_release);
        }
        for (size_t i = 0; i < reload_boxes.size(); ++i) {
          // Full only when a shard has not run a loop turn through
          // kReloadMailboxCapacity reloads: that shard is stuck anyway.
          if (!reload_boxes[i]->Push(live)) {
            base::LogError("shard %zu: reload mailbox full; the shard keeps its config", i);
          }
        }
      },
      &reload_metrics);
  // [cluster]: the node's table of cluster-wide limits, which the shards'
  // cluster-scoped pools take from, and the agent that fills it (one thread;
  // the shards never wait on Redis). Made before the shards, which point into
  // the table; the agent stops after they stopped.
  std::unique_ptr<cluster::Allowances> cluster_table;
  std::unique_ptr<cluster::Agent> cluster_agent;
  const std::string node_name = NodeName(config_);
  if (config_.cluster.enabled()) {
    cluster::Options cluster_options = config_.cluster;
    cluster_options.node = node_name;  // the host name when the key is unset
    cluster_table = std::make_unique<cluster::Allowances>();
    cluster_agent = std::make_unique<cluster::Agent>(std::move(cluster_options),
                                                     cluster_table.get());
  }
  std::vector<std::unique_ptr<metrics::ShardMetrics>> shard_metrics;
  std::vector<std::unique_ptr<Shard>> shards;
  for (size_t i = 0; i < shard_count; ++i) {
    shard_metrics.push_back(std::make_unique<metrics::ShardMetrics>(metrics_options, configured));
    ShardPlace place;
    place.index = i;
    place.count = shard_count;
    place.committer = &committer;
    place.board = &board;
    place.sites = shard_count > 1 ? &sites : nullptr;
    // The window is volleyd's: each shard gets its share.
    place.window = std::max<size_t>(1, static_cast<size_t>(config_.delivery.window) / shard_count);
    place.connection_budget = budget.per_shard[i];
    // So are the message bytes in flight (0: no bound stays no bound).
    if (const uint64_t bound = config_.delivery.max_message_bytes_in_flight; bound > 0) {
      place.max_message_bytes = std::max<uint64_t>(1, bound / shard_count);
    }
    place.stop_now = &stop_now_;
    place.suppressions = suppression.get();
    place.control = &destination_control;
    place.cluster = cluster_table.get();
    place.node = node_name;
    shards.push_back(std::make_unique<Shard>(config_, place, queue.get(), routes.get(),
                                             &ready_jobs, &stop_, shard_metrics.back().get(),
                                             &classifier, &credentials));
    shards.back()->SetDestinationStates(&destination_states);
    shards.back()->SetReloads(reload_boxes[i].get());
    shard_metrics.back()->connection_budget.Set(static_cast<int64_t>(budget.per_shard[i]));
  }
  metrics::FeedbackMetrics feedback_metrics(metrics_options.max_destinations);
  FeedbackOptions feedback_options;
  feedback_options.node = node_name;
  feedback_options.spool = config_.spool_dir;
  feedback_options.inbound_domains = config_.inbound.domains;
  feedback_options.policy.pause_on_complaint_rate = config_.inbound.pause_on_complaint_rate;
  feedback_options.policy.min_delivered_for_rate =
      static_cast<uint64_t>(config_.inbound.min_delivered_for_rate);
  feedback_options.parse_limits.max_message_bytes = config_.inbound.max_message_size;
  FeedbackProcessor feedback(std::move(feedback_options), credentials.tokens(), queue.get(),
                             suppression.get(), &classifier, &recorder, &feedback_metrics,
                             &ready_jobs);
  feedback_for_reload = &feedback;
  spool.SetSuppression(SuppressedAtIntake(node_name, suppression.get(), &recorder, &intake_metrics));
  absl::Status failed;
  {
    IntakeThread intake(spool, queue.get(), queue::JobLimits{}, &ready_jobs,
                        queue::FreeSpaceFloor{{config_.queue_dir}, config_.min_free_space, {}},
                        &intake_metrics);
    intake.Start();
    // volleyctl's way in (engine/admin.h); an address that cannot be bound stops
    // volleyd here with the address in the error.
    ASSIGN_OR_RETURN(auto admin,
                     AdminServer::Create(config_.admin_listen, queue.get(), &ready_jobs,
                                         admin_cap, config_.admin_request_timeout));
    metrics::ExporterSources sources;
    sources.node = node_name;
    if (cluster_agent != nullptr) {
      sources.cluster = [agent = cluster_agent.get()](metrics::ClusterMetrics* m) {
        cluster::CopyStats(agent->stats(), m);
      };
    }
    for (const auto& m : shard_metrics) sources.shards.push_back(m.get());
    sources.intake = &intake_metrics;
    sources.feedback = &feedback_metrics;
    sources.reloads = &reload_metrics;
    sources.store = [this, q = queue.get(), &committer, l = log.get()] {
      metrics::StoreSnapshot s = ReadStoreSnapshot(*q, config_);
      s.writes_stalled = committer.stalled();
      s.log_write_errors = l->write_errors();
      if (!s.ok) s.queue_write_errors = q->Stats().write_errors;
      return s;
    };
    sources.max_jobs = static_cast<size_t>(config_.metrics_max_jobs);
    sources.suspended_destinations = [&destination_control] {
      return destination_control.Snapshot()->size();
    };
    // /metrics on engine/http's server, where idle connections cannot starve
    // a scrape (engine/metrics_endpoint.h).
    ASSIGN_OR_RETURN(auto exporter,
                     MetricsEndpoint::Create({config_.metrics_listen, metrics_cap,
                                              config_.metrics_request_timeout,
                                              config_.metrics_keepalive_timeout},
                                             std::move(sources)));
    exporter->Start();
    base::LogInfo("metrics on http://%s/metrics", exporter->address());
    std::unique_ptr<UnsubscribeServer> unsubscribe;
    if (!config_.unsubscribe.listen.empty()) {
      // A verified click suppresses the address and logs `unsubscribed`; a
      // recipient no longer known answers 410, any other error 503 (the
      // provider tries again).
      ASSIGN_OR_RETURN(unsubscribe,
                       UnsubscribeServer::Create(
                           config_.unsubscribe, credentials.tokens(),
                           [&feedback](const token::Claim& c, std::string_view client) {
                             return feedback.Unsubscribe(c, client);
                           }));
    }
    admin->SetDestinationStates(&destination_states);
    admin->SetSuppressionList(suppression.get());
    admin->SetDestinationControl(&destination_control);
    admin->SetSpool(config_.spool_dir);  // refused jobs and rejected counts
    admin->Start();
    if (unsubscribe) unsubscribe->Start();
    // [inbound]: bounces and feedback reports come in here (engine/inbound.h).
    std::unique_ptr<InboundListener> inbound;
    if (!config_.inbound.listen.empty()) {
      ASSIGN_OR_RETURN(inbound, InboundListener::Create(config_.inbound, config_.spool_dir,
                                                        config_.smtp.ehlo_name));
      RETURN_IF_ERROR(inbound->Start());
      for (const std::string& address : inbound->listening()) {
        base::LogInfo("inbound: listening on %s", address);
      }
    }
    // What the listener stored is read, matched and recorded here; files left
    // from before a restart too.
    FeedbackThread feedback_thread(config_.spool_dir, config_.inbound.max_message_size,
                                   &feedback);
    if (inbound != nullptr && config_.inbound.process) feedback_thread.Start();
    base::LogInfo("running: %zu shard%s, spool %s, queue %s, log %s", shard_count,
                  shard_count == 1 ? "" : "s", config_.spool_dir, config_.queue_dir, log->path());
    base::LogInfo("suppression list %s: about %llu entries, scope %s", suppression->path(),
                  static_cast<unsigned long long>(suppression->ApproximateCount()),
                  queue::SuppressionScopeName(suppression->options().scope));
    // One thread per shard; a shard that fails stops the others (the first
    // failure is what volleyd reports).
    std::mutex failed_mu;
    const auto run_shard = [&](Shard* shard, size_t index) {
      // Named for top -H; not the main thread, whose name is the process's.
      if (index > 0) {
        const std::string name = absl::StrCat("volley-shard", index);
        pthread_setname_np(pthread_self(), name.c_str());
      }
      absl::Status st = shard->Run();
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(failed_mu);
        if (failed.ok()) failed = std::move(st);
        stop_.store(true, std::memory_order_relaxed);
      }
    };
    ReloadThread reload_thread(&reloader);
    RETURN_IF_ERROR(reload_thread.Start());
    if (cluster_agent != nullptr) {
      RETURN_IF_ERROR(cluster_agent->Start());
      base::LogInfo("cluster: node %s, Redis at %s, batch %s, lease_ttl %s%s",
                    node_name,
                    absl::StrJoin(config_.cluster.redis, ", "),
                    absl::FormatDuration(config_.cluster.batch),
                    absl::FormatDuration(config_.cluster.lease_ttl),
                    config_.cluster.expected_nodes > 0
                        ? absl::StrCat(", fallback share 1/", config_.cluster.expected_nodes)
                        : std::string());
    }
    std::vector<std::thread> threads;
    for (size_t i = 1; i < shard_count; ++i) {
      threads.emplace_back(run_shard, shards[i].get(), i);
    }
    run_shard(shards[0].get(), 0);
    for (std::thread& t : threads) t.join();
    if (cluster_agent != nullptr) {
      cluster_agent->Stop();
      // Every connection gives its place back when it closes: a place still
      // held here is a leak that would have starved its destination.
      int held = 0;
      for (const cluster::Allowance* a : cluster_table->Snapshot()) held += a->open();
      base::LogInfo("cluster: agent stopped; %d connection places still held across %zu "
                    "destinations",
                    held, cluster_table->size());
    }
    reload_thread.Stop();
    if (unsubscribe) unsubscribe->Stop();
    admin->Stop();
    if (inbound != nullptr) {
      if (absl::Status st = inbound->Stop(); !st.ok() && failed.ok()) failed = std::move(st);
    }
    feedback_thread.Stop();  // before the committer: it writes through it
  }
  committer.Stop();
  if (!failed.ok()) return failed;
  base::LogInfo("stopped");
  return absl::OkStatus();
}

}  // namespace volley::engine
