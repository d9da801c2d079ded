// routing.h - where a shard's recipients go: static routes, or DNS (MX) through c-ares
//
// SYNOPSIS
//   Routing routing(config, static_routes, &ring, &rng, &now, {.routed = ..., .decided = ...});
//   RETURN_IF_ERROR(routing.Start());
//   routing.Route(w);                  // now, or when its domain's plan is known
//   routing.OnPoll(tag, result);       // a resolver socket's poll completed
//   routing.OnTimer();                 // c-ares's retransmissions and timeouts
//
// DESCRIPTION
//   A recipient whose domain has a static route ([routes]) goes to it at once.
//   Any other domain is looked up (dns/router.h: MX per RFC 5321 section 5, Null
//   MX per RFC 7505) once for all the recipients that wait for it, and its plan
//   is reused until its answers expire (a second at least, so that a failing
//   server is not asked again for every recipient). A verdict instead of a plan
//   (no such domain, Null MX, a server failure, or a local refusal such as the
//   resolver's queue full) goes to `decided`; a local verdict is never reused.
//
//   The resolver's sockets are polled through the shard's ring (one-shot polls,
//   each tagged with a generation so that the completion of a removed poll is
//   dropped even when its fd was reused meanwhile).
//
// BOUNDS
//   Domains known: those of recipients in the window, swept of expired plans
//   every kDomainSweepInterval; lookups: [dns] max_pending, then max_queued.
#ifndef VOLLEY_ENGINE_ROUTING_H_
#define VOLLEY_ENGINE_ROUTING_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "dns/mx.h"
#include "dns/resolver.h"
#include "dns/router.h"
#include "dns/routes.h"
#include "engine/config.h"
#include "engine/reactor/ring.h"
#include "engine/work.h"

namespace volley::engine {

// How often domains whose DNS plan expired are forgotten.
inline constexpr absl::Duration kDomainSweepInterval = absl::Seconds(10);

class Routing {
 public:
  struct Callbacks {
    // w's domain has a route: by a static one, or by DNS.
    std::function<void(Work* w, std::string_view domain,
                       const std::shared_ptr<const dns::Route>& route, bool by_dns)>
        routed;
    // w's domain has no route, and this is why.
    std::function<void(Work* w, std::string_view domain, const dns::MxVerdict& verdict)> decided;
  };

  Routing(const Config& config, const dns::StaticRoutes* routes, reactor::Ring* ring,
          std::mt19937_64* rng, const absl::Time* now, Callbacks callbacks);
  ~Routing();

  // Start - the resolver and the router (their sockets need the ring).
  absl::Status Start();
  // Stop - the resolver goes now, while everything its callbacks reach is still
  // there; returns the recipients that were waiting for a plan.
  std::vector<Work*> Stop();

  void Route(Work* w);
  // SetRoutes - a reload's routes (engine/reload.h), for recipients routed from
  // now on; the old ones must outlive the destinations that point into them.
  void SetRoutes(const dns::StaticRoutes* routes) { routes_ = routes; }
  const dns::StaticRoutes* routes() const { return routes_; }
  // OnPoll - a completion tagged kOpDnsPoll.
  void OnPoll(uint64_t tag, int result);
  // NextTimeout - when c-ares wants OnTimer at the latest.
  std::optional<absl::Duration> NextTimeout() const;
  // OnTimer - c-ares's timeouts, and now and then the sweep of expired domains.
  void OnTimer();

  const dns::Router::Stats& router_stats() const { return router_->stats(); }
  dns::Resolver::Stats resolver_stats() const { return resolver_->stats(); }

 private:
  void RouteByDns(Work* w, const std::string& domain);
  void OnPlan(const std::string& domain);
  void WatchSocket(int fd, bool readable, bool writable);

  const Config& config_;
  const dns::StaticRoutes* routes_;
  reactor::Ring* ring_;
  std::mt19937_64* rng_;
  const absl::Time* now_;
  Callbacks callbacks_;
  // The router after the resolver it uses (destroyed first).
  std::unique_ptr<dns::Resolver> resolver_;
  std::unique_ptr<dns::Router> router_;
  struct Watch {
    unsigned events = 0;      // POLLIN, POLLOUT
    uint16_t generation = 0;  // of the poll submitted, in its tag
    bool armed = false;       // a poll is submitted and not yet completed
  };
  absl::flat_hash_map<int, Watch> watches_;  // by fd
  uint16_t generation_ = 0;
  // Domains routed by DNS: the plan in use until it expires, and the recipients
  // waiting for one.
  struct DomainRoute {
    absl::Time valid_until = absl::InfinitePast();
    bool resolving = false;
    std::shared_ptr<const dns::Route> route;  // or:
    std::optional<dns::MxVerdict> verdict;
    std::vector<Work*> waiting;
  };
  absl::flat_hash_map<std::string, DomainRoute> domains_;
  absl::Time last_sweep_ = absl::InfinitePast();
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_ROUTING_H_
