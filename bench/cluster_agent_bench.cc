// cluster-agent-bench - Redis round trips and commands per 10,000 messages
// granted by cluster agents (cluster/agent.h) to hungry destinations
// (bench/cluster_agent_bench.sh starts the redis-server and counts Redis's
// side independently with INFO commandstats).
//
//   cluster-agent-bench REDIS_HOST:PORT NODES DESTINATIONS RATE SECONDS
//
// NODES agents, each with its own table, share DESTINATIONS pools, each
// limited to RATE messages a second and 10 connections cluster-wide; one
// thread per node takes every permit it is given. Prints what was taken and
// what the agents sent to Redis.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cluster/agent.h"
#include "cluster/allowance.h"

namespace {

using volley::cluster::Agent;
using volley::cluster::Allowance;
using volley::cluster::Allowances;

int Usage() {
  std::fprintf(stderr, "usage: cluster-agent-bench REDIS_HOST:PORT NODES DESTINATIONS RATE SECONDS\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) return Usage();
  int nodes = 0, destinations = 0;
  double rate = 0, seconds = 0;
  if (!absl::SimpleAtoi(argv[2], &nodes) || !absl::SimpleAtoi(argv[3], &destinations) ||
      !absl::SimpleAtod(argv[4], &rate) || !absl::SimpleAtod(argv[5], &seconds) || nodes < 1 ||
      nodes > 64 || destinations < 1 || destinations > 100000 || rate <= 0 || seconds <= 0) {
    return Usage();
  }
  std::vector<std::unique_ptr<Allowances>> tables;
  std::vector<std::unique_ptr<Agent>> agents;
  std::vector<std::vector<Allowance*>> pools(static_cast<size_t>(nodes));
  for (int n = 0; n < nodes; ++n) {
    tables.push_back(std::make_unique<Allowances>());
    for (int d = 0; d < destinations; ++d) {
      Allowance* a = tables.back()->Join(absl::StrCat("mx", d, ".bench.test:25|bulk"));
      a->SetLimits({.message_rate = rate, .max_connections = 10});
      pools[static_cast<size_t>(n)].push_back(a);
    }
    volley::cluster::Options o;
    o.redis = {argv[1]};
    o.node = absl::StrCat("bench-", n);
    o.key_prefix = "bench:";
    agents.push_back(std::make_unique<Agent>(o, tables.back().get()));
  }
  for (auto& agent : agents) {
    if (!agent->Start().ok()) return 1;
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> taken{0};
  std::vector<std::thread> shards;
  for (int n = 0; n < nodes; ++n) {
    shards.emplace_back([&, n] {
      while (!stop.load()) {
        uint64_t mine = 0;
        for (Allowance* a : pools[static_cast<size_t>(n)]) {
          while (a->TakeMessage()) ++mine;
          while (a->OverAllowed()) a->Closed();
          while (a->TryOpen()) {
          }
        }
        taken.fetch_add(mine);
        absl::SleepFor(absl::Milliseconds(2));
      }
    });
  }
  const absl::Time start = absl::Now();
  absl::SleepFor(absl::Seconds(seconds));
  stop = true;
  for (std::thread& t : shards) t.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  uint64_t round_trips = 0, commands = 0, fallbacks = 0;
  for (auto& agent : agents) {
    agent->Stop();
    const volley::cluster::Stats s = agent->stats();
    round_trips += s.round_trips;
    commands += s.commands;
    fallbacks += s.fallbacks;
  }
  const double messages = static_cast<double>(taken.load());
  std::printf(
      "nodes %d, destinations %d, rate %.0f/s each: %.0f messages in %.2f s (%.0f/s, %.1f%% of "
      "%.0f/s)\n",
      nodes, destinations, rate, messages, elapsed, messages / elapsed,
      100.0 * messages / (rate * destinations * elapsed), rate * destinations);
  std::printf("agents: %lu round trips, %lu commands, %lu fallbacks\n",
              static_cast<unsigned long>(round_trips), static_cast<unsigned long>(commands),
              static_cast<unsigned long>(fallbacks));
  if (messages > 0) {
    std::printf("per 10,000 messages: %.1f round trips, %.0f commands\n",
                1e4 * static_cast<double>(round_trips) / messages,
                1e4 * static_cast<double>(commands) / messages);
  }
  std::printf("messages %.0f\n", messages);
  return 0;
}
