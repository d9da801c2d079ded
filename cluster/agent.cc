#include "cluster/agent.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/time/clock.h"

namespace volley::cluster {

// The fallback share: each pool's limits over the node count, granted here
// without Redis. (The shared path through Redis is built on top of this: the
// share is what every node falls back to when Redis does not answer.)
struct Agent::Impl {
  Impl(Options o, Allowances* t) : options(std::move(o)), table(t) {}

  void Run() {
    std::unique_lock<std::mutex> lock(mu);
    while (!stopping) {
      lock.unlock();
      const absl::Time now = absl::Now();
      GrantShares(now);
      table->SetNextGrantAt(now + options.batch);
      lock.lock();
      wake.wait_for(lock, absl::ToChronoNanoseconds(options.batch), [&] { return stopping; });
    }
  }

  int Nodes() const {
    if (options.expected_nodes > 0) return options.expected_nodes;
    return std::max(1, live_nodes.load(std::memory_order_acquire));
  }

  // GrantShares - one batch of every pool's fallback share: its rates' worth
  // of a batch interval over the node count (the fractions carried to the
  // next batch), at most one batch kept unused, and its connections over the
  // node count (at least one: a destination is never shut out).
  void GrantShares(absl::Time now) {
    (void)now;
    const double nodes = Nodes();
    const double seconds = absl::ToDoubleSeconds(options.batch);
    for (Allowance* a : table->Snapshot()) {
      Carry& carry = carries[a];
      const PoolLimits limits = a->limits();
      a->TakeDemand();
      const double messages = limits.message_rate / nodes * seconds + carry.messages;
      const double connections = limits.connection_rate / nodes * seconds + carry.connections;
      const int64_t whole_messages = static_cast<int64_t>(std::floor(messages));
      const int64_t whole_connections = static_cast<int64_t>(std::floor(connections));
      carry.messages = messages - static_cast<double>(whole_messages);
      carry.connections = connections - static_cast<double>(whole_connections);
      a->DropPermits(std::max<int64_t>(1, whole_messages), std::max<int64_t>(1, whole_connections));
      a->AddMessagePermits(whole_messages);
      a->AddConnectionPermits(whole_connections);
      granted_messages.fetch_add(static_cast<uint64_t>(whole_messages), std::memory_order_relaxed);
      granted_connections.fetch_add(static_cast<uint64_t>(whole_connections),
                                    std::memory_order_relaxed);
      const int allowed = limits.max_connections <= 0
                              ? 0
                              : std::max(1, static_cast<int>(limits.max_connections / nodes));
      a->SetConnectionsAllowed(allowed);
    }
  }

  struct Carry {
    double messages = 0;
    double connections = 0;
  };

  const Options options;
  Allowances* const table;
  std::unordered_map<Allowance*, Carry> carries;  // the agent thread's own
  std::atomic<int> live_nodes{0};
  std::atomic<uint64_t> granted_messages{0};
  std::atomic<uint64_t> granted_connections{0};
  std::mutex mu;
  std::condition_variable wake;
  bool stopping = false;  // under mu
  std::thread thread;
};

Agent::Agent(Options options, Allowances* table)
    : impl_(std::make_unique<Impl>(std::move(options), table)) {}

Agent::~Agent() { Stop(); }

absl::Status Agent::Start() {
  if (impl_->thread.joinable()) return absl::FailedPreconditionError("cluster agent: started twice");
  impl_->table->SetShared(false);
  impl_->thread = std::thread([this] { impl_->Run(); });
  return absl::OkStatus();
}

void Agent::Stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Stats Agent::stats() const {
  Stats s;
  s.fallback = true;
  s.fallbacks = 0;
  s.live_nodes = impl_->live_nodes.load(std::memory_order_acquire);
  s.message_permits = impl_->granted_messages.load(std::memory_order_relaxed);
  s.connection_permits = impl_->granted_connections.load(std::memory_order_relaxed);
  return s;
}

}  // namespace volley::cluster
