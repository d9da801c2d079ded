#include "cluster/allowance.h"

#include <algorithm>
#include <utility>

namespace volley::cluster {

void Allowance::SetLimits(const PoolLimits& limits) {
  message_rate_.store(limits.message_rate, std::memory_order_release);
  connection_rate_.store(limits.connection_rate, std::memory_order_release);
  max_connections_.store(limits.max_connections, std::memory_order_release);
}

PoolLimits Allowance::limits() const {
  return PoolLimits{message_rate_.load(std::memory_order_acquire),
                    connection_rate_.load(std::memory_order_acquire),
                    max_connections_.load(std::memory_order_acquire)};
}

bool Allowance::TakeOne(std::atomic<int64_t>& stock) {
  int64_t have = stock.load(std::memory_order_relaxed);
  while (have > 0) {
    if (stock.compare_exchange_weak(have, have - 1, std::memory_order_acq_rel)) return true;
  }
  return false;
}

bool Allowance::TakeMessage() {
  if (message_rate_.load(std::memory_order_relaxed) <= 0 || TakeOne(message_permits_)) {
    messages_taken_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  messages_refused_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

bool Allowance::TakeConnection() {
  if (connection_rate_.load(std::memory_order_relaxed) <= 0 || TakeOne(connection_permits_)) {
    connections_taken_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  connections_refused_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

bool Allowance::TryOpen() {
  if (max_connections_.load(std::memory_order_relaxed) <= 0) {
    open_.fetch_add(1, std::memory_order_acq_rel);
    return true;
  }
  int open = open_.load(std::memory_order_relaxed);
  while (open < allowed_.load(std::memory_order_acquire)) {
    if (open_.compare_exchange_weak(open, open + 1, std::memory_order_acq_rel)) return true;
  }
  opens_refused_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void Allowance::Closed() { open_.fetch_sub(1, std::memory_order_acq_rel); }

bool Allowance::OverAllowed() const {
  return max_connections_.load(std::memory_order_relaxed) > 0 &&
         open_.load(std::memory_order_acquire) > allowed_.load(std::memory_order_acquire);
}

void Allowance::ReportBackoff(const SharedBackoff& backoff) {
  std::lock_guard<std::mutex> lock(backoff_mu_);
  // The highest level since the agent last took it: a level raised and
  // lowered again between two batches still reaches the cluster.
  if (reported_changed_ && backoff.level < reported_.level) return;
  reported_ = backoff;
  reported_changed_ = true;
}

SharedBackoff Allowance::ClusterBackoff() const {
  std::lock_guard<std::mutex> lock(backoff_mu_);
  return cluster_;
}

Demand Allowance::TakeDemand() {
  Demand d;
  d.messages_taken = messages_taken_.exchange(0, std::memory_order_acq_rel);
  d.messages_refused = messages_refused_.exchange(0, std::memory_order_acq_rel);
  d.connections_taken = connections_taken_.exchange(0, std::memory_order_acq_rel);
  d.connections_refused = connections_refused_.exchange(0, std::memory_order_acq_rel);
  d.opens_refused = opens_refused_.exchange(0, std::memory_order_acq_rel);
  d.open = open_.load(std::memory_order_acquire);
  return d;
}

void Allowance::AddMessagePermits(int64_t n) {
  if (n > 0) message_permits_.fetch_add(n, std::memory_order_acq_rel);
}

void Allowance::AddConnectionPermits(int64_t n) {
  if (n > 0) connection_permits_.fetch_add(n, std::memory_order_acq_rel);
}

void Allowance::DropPermits(int64_t keep_messages, int64_t keep_connections) {
  const auto clamp = [](std::atomic<int64_t>& stock, int64_t keep) {
    int64_t have = stock.load(std::memory_order_relaxed);
    while (have > keep && !stock.compare_exchange_weak(have, keep, std::memory_order_acq_rel)) {
    }
  };
  clamp(message_permits_, std::max<int64_t>(0, keep_messages));
  clamp(connection_permits_, std::max<int64_t>(0, keep_connections));
}

void Allowance::SetConnectionsAllowed(int n) {
  allowed_.store(std::max(0, n), std::memory_order_release);
}

bool Allowance::TakeReportedBackoff(SharedBackoff* out) {
  std::lock_guard<std::mutex> lock(backoff_mu_);
  if (!reported_changed_) return false;
  *out = reported_;
  reported_changed_ = false;
  return true;
}

void Allowance::SetClusterBackoff(const SharedBackoff& backoff) {
  std::lock_guard<std::mutex> lock(backoff_mu_);
  cluster_ = backoff;
  cluster_level_.store(backoff.level, std::memory_order_release);
}

Allowance* Allowances::Join(std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pools_.find(key);
  if (it == pools_.end()) {
    it = pools_.emplace(std::string(key), std::make_unique<Allowance>(std::string(key))).first;
  }
  return it->second.get();
}

std::vector<Allowance*> Allowances::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Allowance*> out;
  out.reserve(pools_.size());
  for (const auto& [key, a] : pools_) out.push_back(a.get());
  return out;
}

size_t Allowances::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pools_.size();
}

absl::Time Allowances::NextGrantAt() const {
  const int64_t us = next_grant_us_.load(std::memory_order_acquire);
  return us == INT64_MAX ? absl::InfiniteFuture() : absl::FromUnixMicros(us);
}

void Allowances::SetNextGrantAt(absl::Time t) {
  next_grant_us_.store(t == absl::InfiniteFuture() ? INT64_MAX : absl::ToUnixMicros(t),
                       std::memory_order_release);
}

}  // namespace volley::cluster
