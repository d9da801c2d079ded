// router.h - a domain's delivery plan from DNS: the cache, the resolver and the planner
//
// SYNOPSIS
//   Router router(options, resolver.get(), clock, random);
//   router.Plan("a.test", [](RoutePlan p) {
//     if (p.plan.verdict) ...;                    // bounce or defer, no connection
//     else for (const PlannedHost& h : p.plan.hosts) ...;
//     // p.valid_until: when the answers it was made from start to expire
//   });
//
// DESCRIPTION
//   One plan is the MX question for the domain, then the A (and AAAA, unless
//   IPv4 only) questions of each MX host the planner keeps (dns/mx.h), each taken
//   from the cache (dns/cache.h) or asked of the resolver (dns/resolver.h) on a
//   miss. Concurrent plans share questions through the cache: many plans for one
//   domain, or for domains with the same MX hosts, make one query per question.
//   `done` is called once per Plan: at once, before Plan returns, when the cache
//   holds every answer; otherwise from the resolver's callbacks.
//
//   Our own bounds are not the DNS's word. A question the cache refuses (too many
//   in flight), or the resolver refuses (its queue full: a DnsAnswer with `local`
//   set, which the cache does not keep), and a Plan past max_plans, give a plan
//   whose verdict has MxVerdict::local set: 4.4.3, "a.test: DNS lookups queue
//   full", "a.test: resolver queue full", "too many DNS plans under way". The
//   engine retries such recipients soon and counts no attempt. Such a plan's
//   valid_until is the time it was made: not to be reused.
//
// LIMITS
//   RouterOptions::max_plans plans in progress; past it, Plan gives a local
//   verdict at once.
//   MxOptions::max_mx_hosts is at most kMaxRouterMxHosts.
//
// CONTRACT
//   Single-threaded, one per shard, alongside its resolver. Destroying the router
//   drops the plans in progress without calling them; destroy it before its resolver.
#ifndef VOLLEY_DNS_ROUTER_H_
#define VOLLEY_DNS_ROUTER_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "dns/cache.h"
#include "dns/mx.h"
#include "dns/resolver.h"

namespace volley::dns {

inline constexpr size_t kMaxRouterMxHosts = 100;

struct RouterOptions {
  MxOptions mx;
  CacheOptions cache;
  // Plans in progress at once. The engine makes one per domain waiting for its
  // route, so its window ([delivery] window recipients, 20,000 by default) bounds
  // them already; this is a backstop above that. Default: 100000.
  size_t max_plans = 100000;
};

struct RoutePlan {
  MxPlan plan;
  // The earliest expiry among the answers the plan was made from: reuse the
  // plan until then, ask again after. A local answer or refusal expires at once.
  absl::Time valid_until = absl::InfinitePast();
};

class Router {
 public:
  using Done = std::function<void(RoutePlan plan)>;

  Router(const RouterOptions& options, Resolver* resolver, std::function<absl::Time()> clock,
         std::function<uint64_t()> random);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  void Plan(std::string_view domain, Done done);

  size_t in_progress() const { return requests_.size(); }

  // Counts since the router was made, for the metrics (docs/metrics.md).
  struct Stats {
    // Questions answered by a server (or its silence: a timeout), by AnswerKind;
    // the resolver's local refusals answer nothing and are counted apart.
    std::array<uint64_t, 4> answers{};
    uint64_t cache_hits = 0;
    uint64_t cache_misses = 0;      // waited for a query, its own or one under way
    // Our own bounds (issue 16): local verdicts, not DNS failures.
    uint64_t local_answers = 0;     // questions the resolver refused, its queue full
    uint64_t cache_overloaded = 0;  // questions the cache refused (kOverloaded)
    uint64_t plans_refused = 0;     // Plan calls past max_plans
  };
  const Stats& stats() const { return stats_; }
  const DnsCache& cache() const { return cache_; }

 private:
  struct Request;
  // Need - the answer to (name, type) for request `id`'s `slot`: from the cache
  // now, or when the resolver answers.
  void Need(uint64_t id, const std::string& name, RrType type, uint32_t slot);
  void Deliver(uint64_t waiter, const std::shared_ptr<const DnsAnswer>& answer,
               absl::Time expires);
  void Complete(uint64_t id);

  RouterOptions options_;
  Resolver* resolver_;
  std::function<absl::Time()> clock_;
  std::function<uint64_t()> random_;
  DnsCache cache_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Request>> requests_;
  uint64_t next_id_ = 1;
  Stats stats_;
};

}  // namespace volley::dns

#endif  // VOLLEY_DNS_ROUTER_H_
