// metrics.cc - see metrics.h
#include "metrics/metrics.h"

#include <algorithm>

#include "base/strings.h"
#include "metrics/classify.h"

namespace volley::metrics {

namespace {

// Roughly doubling: a transaction takes a millisecond to a minute, a recipient
// waits a second (delivered at once) to three days (retry.max_age).
constexpr double kTransactionBounds[] = {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2,
                                         0.5,   1,     2,     5,    10,   30,   60};
constexpr double kQueueTimeBounds[] = {1,    2,    5,     10,    30,    60,    120,   300,
                                       600,  1800, 3600,  7200,  14400, 28800, 86400, 172800,
                                       259200};

constexpr std::string_view kOther = "other";

// Every class a [[classify]] table can name has a slot, and so do the two
// Classify gives without a rule.
static_assert(kMaxOutcomeClasses == kMaxClassifyRules + 2);

}  // namespace

std::span<const double> TransactionBuckets() { return kTransactionBounds; }
std::span<const double> QueueTimeBuckets() { return kQueueTimeBounds; }

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds.begin(), bounds.end()),
      buckets_(new std::atomic<uint64_t>[bounds.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  const size_t i =
      static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[i].store(buckets_[i].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  count_.store(count_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  sum_.store(sum_.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  // The count is the +Inf bucket, so the two always agree within a scrape.
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::string_view ConnFailureName(ConnFailure f) {
  switch (f) {
    case ConnFailure::kConnect: return "connect";
    case ConnFailure::kTimeout: return "timeout";
    case ConnFailure::kGreeting: return "greeting";
    case ConnFailure::kEhlo: return "ehlo";
    case ConnFailure::kTls: return "tls";
    case ConnFailure::kProtocol: return "protocol";
    case ConnFailure::kClosed: return "closed";
  }
  return "closed";
}

size_t TlsVersionIndex(std::string_view version) {
  for (size_t i = 0; i + 1 < kTlsVersions.size(); ++i) {
    if (kTlsVersions[i] == version) return i;
  }
  return kTlsVersions.size() - 1;
}

ShardMetrics::ShardMetrics(const MetricsOptions& options,
                           const std::vector<std::string>& configured)
    : capacity_(configured.size() + options.max_destinations),
      table_(new DestinationCounters[capacity_ + 1]),
      classes_(new ClassCounters[kMaxOutcomeClasses]) {
  table_[capacity_].name = std::string(kOther);
  for (const std::string& name : configured) Destination(name);
  // "other" first: where classes beyond the bound go, so it always has a slot.
  Class(kOther);
  for (const std::string& name : options.outcome_classes) Class(name);
}

void ShardMetrics::SetDestinationLevels(
    const absl::flat_hash_map<const DestinationCounters*, DestinationLevels>& levels) {
  auto set = [&](DestinationCounters* d) {
    const auto it = levels.find(d);
    const DestinationLevels now = it == levels.end() ? DestinationLevels{} : it->second;
    d->ready.Set(now.ready);
    d->connections.Set(now.connections);
    d->backoff_level.Set(now.backoff_level);
  };
  const size_t n = published_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < n; ++i) set(&table_[i]);
  set(&table_[capacity_]);
}

ClassCounters& ShardMetrics::Class(std::string_view klass) {
  if (auto it = class_by_name_.find(base::Sv(klass)); it != class_by_name_.end()) {
    return *it->second;
  }
  const size_t n = classes_published_.load(std::memory_order_relaxed);
  if (n == kMaxOutcomeClasses) return classes_[0];  // "other", registered first
  ClassCounters* c = &classes_[n];
  c->name = std::string(klass);
  class_by_name_.emplace(c->name, c);
  // The name is complete before a reader can see the entry.
  classes_published_.store(n + 1, std::memory_order_release);
  return *c;
}

void ShardMetrics::CountClass(DeliveryStatus status, std::string_view klass) {
  if (klass.empty()) return;
  for (size_t r = 0; r < kClassifiedResults.size(); ++r) {
    if (kClassifiedResults[r] == status) {
      Class(klass).outcomes[r].Add();
      return;
    }
  }
}

std::vector<const ClassCounters*> ShardMetrics::Classes() const {
  std::vector<const ClassCounters*> out;
  const size_t n = classes_published_.load(std::memory_order_acquire);
  for (size_t i = 0; i < n; ++i) out.push_back(&classes_[i]);
  return out;
}

DestinationCounters& ShardMetrics::Destination(std::string_view name) {
  if (auto it = by_name_.find(base::Sv(name)); it != by_name_.end()) return *it->second;
  const size_t n = published_.load(std::memory_order_relaxed);
  if (n == capacity_) return table_[capacity_];
  DestinationCounters* d = &table_[n];
  d->name = std::string(name);
  by_name_.emplace(d->name, d);
  // The name is complete before a reader can see the entry.
  published_.store(n + 1, std::memory_order_release);
  return *d;
}

std::vector<const DestinationCounters*> ShardMetrics::Destinations() const {
  std::vector<const DestinationCounters*> out;
  const size_t n = published_.load(std::memory_order_acquire);
  for (size_t i = 0; i < n; ++i) out.push_back(&table_[i]);
  out.push_back(&table_[capacity_]);
  return out;
}

void FeedbackMetrics::CountEvent(DeliveryStatus event, std::string_view domain) {
  if (!IsFeedbackEvent(event)) return;
  const size_t e = static_cast<size_t>(event) - kDeliveryOutcomes;
  events[e].Add();
  // A report that names no address has no destination: "other" (an empty label
  // value would read as no label at all).
  if (domain.empty()) domain = "other";
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(destinations_.begin(), destinations_.end(),
                         [&](const PerDestination& d) { return d.name == domain; });
  if (it == destinations_.end()) {
    // destinations_[0] is "other": the named ones are the rest.
    const std::string_view name = destinations_.size() - 1 < max_destinations_ ? domain : "other";
    it = std::find_if(destinations_.begin(), destinations_.end(),
                      [&](const PerDestination& d) { return d.name == name; });
    if (it == destinations_.end()) {
      destinations_.push_back(PerDestination{std::string(name), {}});
      it = destinations_.end() - 1;
    }
  }
  ++it->events[e];
}

std::vector<FeedbackMetrics::PerDestination> FeedbackMetrics::Destinations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return destinations_;
}

}  // namespace volley::metrics
