// shard_metrics.cc - what a shard shows: metrics, the admin API's destination
// states, and its DNS pools' shares of their sites (SiteShares).
#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/json.h"
#include "base/time_text.h"
#include "engine/shard.h"

namespace volley::engine {

void Shard::CountReplies(Conn* c) {
  const std::array<uint32_t, 4> counts = c->client->TakeReplyCounts();
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] != 0) metrics_->replies[i].Add(counts[i]);
  }
}

namespace {

// AppendJsonTime - "2026-12-06T20:10:47Z", or null for a time that is not one
// (nothing waits for an unreachable destination).
void AppendJsonTime(std::string* json, absl::Time t) {
  if (t == absl::InfiniteFuture() || t == absl::InfinitePast()) {
    *json += "null";
    return;
  }
  json->push_back('"');
  base::AppendUtcTime(t, base::TimePrecision::kSeconds, json);
  json->push_back('"');
}

// Trouble - what holds a destination back, in the order both listings
// name it: a suspension, a backoff, an unreachable route (state null: none),
// and when that is next looked at again.
struct Trouble {
  const char* state = nullptr;
  absl::Time next = absl::InfinitePast();
};

Trouble TroubleOf(const DestinationLimits& l, const Reachability& reach, absl::Time now) {
  if (l.suspended(now)) return {"suspended", l.suspended_until()};
  if (l.backoff_level() > 0) return {"backoff", l.backoff_step_at()};
  if (reach.unreachable()) return {"unreachable", reach.next_try()};
  return {};
}

}  // namespace

void Shard::PublishDestinationStates() {
  std::string json;
  bool first = true;
  for (const auto& [key, d] : destinations_) {
    const DestinationLimits& l = d->limits;
    const Reachability& reach = d->reach;
    const Trouble trouble = TroubleOf(l, reach, now_);
    if (trouble.state == nullptr) continue;
    if (!first) json += ",";
    first = false;
    json += "{\"name\":";
    base::AppendJsonString(&json, l.route()->name);
    // The pool: the route or site and the [destination] table it goes by.
    json += ",\"pool\":";
    base::AppendJsonString(&json, key);
    absl::StrAppend(&json, ",\"state\":\"", trouble.state,
                    "\",\"level\":", l.backoff_level(),
                    ",\"max_connections\":", l.MaxConnections(),
                    ",\"max_message_rate\":", absl::StrFormat("%.3f", l.MessageRate()),
                    ",\"until\":");
    AppendJsonTime(&json, trouble.next);
    json += ",\"reason\":";
    base::AppendJsonString(&json, l.backoff_reason());
    if (reach.unreachable()) {
      // Why its connections fail, and when what waits is tried again.
      json += ",\"last_error\":";
      base::AppendJsonString(&json, reach.last_error());
      json += ",\"next_retry\":";
      AppendJsonTime(&json, reach.next_try());
    }
    json += "}";
  }
  destination_states_->Publish(std::move(json), place_.index);
  PublishAllDestinations();
}

void Shard::PublishAllDestinations() {
  std::unordered_map<const Destination*, uint64_t> in_flight;
  connections_.ForEach([&](uint32_t, Conn& c) {
    if (c.dest == nullptr) return;
    for (const ConnTransaction& t : c.transactions) in_flight[c.dest] += t.works.size();
  });
  std::vector<DestinationEntry> entries;
  entries.reserve(destinations_.size());
  for (const auto& [key, d] : destinations_) {
    const DestinationLimits& l = d->limits;
    const Reachability& reach = d->reach;
    const Trouble trouble = TroubleOf(l, reach, now_);
    DestinationEntry e;
    const auto it = in_flight.find(d.get());
    e.in_flight = it == in_flight.end() ? 0 : it->second;
    e.queued = d->ready.size() + e.in_flight;
    const bool last_deferred =
        d->last_reply.has_value() && d->last_status != metrics::DeliveryStatus::kDelivered;
    e.troubled = trouble.state != nullptr || last_deferred;
    std::string& json = e.json;
    json = "{\"name\":";
    base::AppendJsonString(&json, l.route()->name);
    json += ",\"pool\":";
    base::AppendJsonString(&json, key);
    const char* state = trouble.state != nullptr ? trouble.state
                        : e.queued > 0            ? "active"
                                                  : "idle";
    const double limit = l.MessageRate();
    absl::StrAppend(&json, ",\"state\":\"", state, "\",\"queued\":", e.queued,
                    ",\"waiting\":", d->ready.size(), ",\"in_flight\":", e.in_flight,
                    ",\"deferrals\":", d->deferrals, ",\"connections\":", d->connections,
                    ",\"max_connections\":", l.MaxConnections(),
                    ",\"rate\":", absl::StrFormat("%.3f", l.StartedRate()),
                    ",\"max_message_rate\":");
    if (limit > 0) {
      absl::StrAppend(&json, absl::StrFormat("%.3f", limit));
    } else {
      json += "null";
    }
    absl::StrAppend(&json, ",\"level\":", l.backoff_level(), ",\"next_retry\":");
    AppendJsonTime(&json, trouble.next);
    json += ",\"reason\":";
    base::AppendJsonString(&json, l.backoff_reason());
    if (reach.unreachable()) {
      json += ",\"last_error\":";
      base::AppendJsonString(&json, reach.last_error());
    }
    json += ",\"last_reply\":";
    if (d->last_reply) {
      const smtp::Outcome& o = *d->last_reply;
      base::AppendJsonString(&json, absl::StrCat(o.code, " ", o.enhanced, " ",
                                                 base::Sv(std::string_view(o.text).substr(0, 200))));
      json += ",\"last_status\":";
      base::AppendJsonString(&json, metrics::DeliveryStatusName(d->last_status));
      json += ",\"last_class\":";
      base::AppendJsonString(&json, classifier_->Classify(d->last_status, o.code, o.enhanced,
                                                          o.text));
      json += ",\"last_reply_at\":\"";
      base::AppendUtcTime(d->last_reply_at, base::TimePrecision::kSeconds, &json);
      json += "\"";
    } else {
      json += "null,\"last_status\":null,\"last_class\":null,\"last_reply_at\":null";
    }
    json += "}";
    entries.push_back(std::move(e));
  }
  destination_states_->PublishAll(std::move(entries), place_.index);
}

void Shard::ReportSites() {
  std::vector<std::string> keys;
  std::vector<Destination*> pools;
  for (auto& [key, d] : destinations_) {
    if (!d->shared || (d->ready.empty() && d->connections == 0)) continue;
    keys.push_back(key);
    pools.push_back(d.get());
  }
  const std::vector<int> sharing = place_.sites->Report(place_.index, keys);
  for (size_t i = 0; i < pools.size(); ++i) pools[i]->limits.SetSharing(sharing[i]);
}

void Shard::PublishDestinationLevels() {
  // Pools that share a name (a route under two [destination] tables, or every
  // destination past the top_destinations that count as "other") add up.
  absl::flat_hash_map<const metrics::DestinationCounters*, metrics::DestinationLevels> levels;
  for (const auto& [key, d] : destinations_) {
    metrics::DestinationLevels& l = levels[d->counters];
    l.ready += static_cast<int64_t>(d->ready.size());
    l.connections += d->connections;
    l.backoff_level = std::max<int64_t>(l.backoff_level, d->limits.backoff_level());
  }
  metrics_->SetDestinationLevels(levels);
}

void Shard::AdoptClusterBackoff() {
  for (auto& [key, d] : destinations_) {
    if (d->limits.AdoptClusterBackoff(now_)) Activate(d.get());  // to step down when due
  }
}

void Shard::PublishLoopMetrics(absl::Time turn_started) {
  if (now_ - last_states_ >= absl::Seconds(1)) {
    TendDestinations();
    if (place_.cluster != nullptr) AdoptClusterBackoff();
    PublishDestinationLevels();
    if (place_.sites != nullptr) ReportSites();
    last_states_ = now_;
  }
  if (destination_states_ != nullptr) {
    // Only when the admin API asks (DestinationStates): the listings are the
    // costliest walk over every destination.
    const uint64_t asked = destination_states_->Asked();
    if (asked != states_answered_) {
      PublishDestinationStates();
      destination_states_->Answered(place_.index, asked);
      states_answered_ = asked;
    }
  }
  metrics_->in_flight.Set(static_cast<int64_t>(window_.in_flight()));
  metrics_->message_bytes_in_flight.Set(static_cast<int64_t>(message_bytes_.held()));
  metrics_->message_bytes_peak.Set(static_cast<int64_t>(message_bytes_.peak()));
  const absl::Duration busy = absl::Now() - turn_started - ring_.last_wait();
  if (busy > absl::ZeroDuration()) {
    metrics_->busy_nanos.Add(static_cast<uint64_t>(absl::ToInt64Nanoseconds(busy)));
  }
  const dns::Router::Stats& dns = routing_.router_stats();
  for (size_t i = 0; i < dns.answers.size(); ++i) {
    metrics_->dns_queries[i].Add(dns.answers[i] - dns_counted_.answers[i]);
  }
  metrics_->dns_cache_hits.Add(dns.cache_hits - dns_counted_.cache_hits);
  metrics_->dns_cache_misses.Add(dns.cache_misses - dns_counted_.cache_misses);
  dns_counted_ = dns;
  const dns::Resolver::Stats asked = routing_.resolver_stats();
  metrics_->dns_sent.Add(asked.sent - resolver_counted_.sent);
  metrics_->dns_queue_full.Add(asked.refused - resolver_counted_.refused);
  metrics_->fd_exhausted.Add(asked.no_descriptor - resolver_counted_.no_descriptor);
  metrics_->receive_buffers_exhausted.Add(ring_.out_of_buffers() - out_of_buffers_counted_);
  out_of_buffers_counted_ = ring_.out_of_buffers();
  metrics_->dns_queued.Set(static_cast<int64_t>(asked.queued));
  metrics_->dns_in_flight.Set(static_cast<int64_t>(asked.in_flight));
  resolver_counted_ = asked;
}

}  // namespace volley::engine
