#include "engine/routing.h"

#include <poll.h>

#include "absl/strings/ascii.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/connection.h"
#include "engine/reactor/tag.h"
#include "queue/job.h"

namespace volley::engine {

Routing::Routing(const Config& config, const dns::StaticRoutes* routes, reactor::Ring* ring,
                 std::mt19937_64* rng, const absl::Time* now, Callbacks callbacks)
    : config_(config),
      routes_(routes),
      ring_(ring),
      rng_(rng),
      now_(now),
      callbacks_(std::move(callbacks)) {}

Routing::~Routing() {
  for (Work* w : Stop()) delete w;
}

absl::Status Routing::Start() {
  ASSIGN_OR_RETURN(resolver_, dns::Resolver::Create(config_.dns.resolver,
                                                    [this](int fd, bool readable, bool writable) {
                                                      WatchSocket(fd, readable, writable);
                                                    }));
  router_ = std::make_unique<dns::Router>(
      config_.dns.router, resolver_.get(), [this] { return *now_; }, [this] { return (*rng_)(); });
  return absl::OkStatus();
}

std::vector<Work*> Routing::Stop() {
  // Left to the destructor, c-ares closing its sockets called back into a
  // half-destroyed shard and volleyd spun there instead of exiting (issue 16).
  router_.reset();
  resolver_.reset();
  watches_.clear();  // their sockets are closed; the ring's teardown ends the polls
  std::vector<Work*> waiting;
  for (auto& [domain, d] : domains_) {
    waiting.insert(waiting.end(), d.waiting.begin(), d.waiting.end());
    d.waiting.clear();
  }
  return waiting;
}

void Routing::Route(Work* w) {
  const std::string domain = absl::AsciiStrToLower(base::Sv(queue::DomainOf(w->rcpt.to)));
  if (const dns::Route* route = routes_->Find(domain)) {
    // Static routes live as long as the shard: a shared_ptr that owns nothing.
    callbacks_.routed(w, domain,
                      std::shared_ptr<const dns::Route>(std::shared_ptr<void>(), route),
                      /*by_dns=*/false);
    return;
  }
  RouteByDns(w, domain);
}

void Routing::RouteByDns(Work* w, const std::string& domain) {
  DomainRoute& known = domains_[domain];
  if (!known.resolving && *now_ < known.valid_until) {
    if (known.route) {
      callbacks_.routed(w, domain, known.route, /*by_dns=*/true);
      return;
    }
    known.waiting.push_back(w);  // the verdict, applied by OnPlan's way
    OnPlan(domain);
    return;
  }
  known.waiting.push_back(w);
  if (known.resolving) return;
  known.resolving = true;
  // May answer at once from the cache (and call OnPlan before returning).
  router_->Plan(domain, [this, domain](dns::RoutePlan plan) {
    auto it = domains_.find(domain);
    if (it == domains_.end()) return;
    DomainRoute& d = it->second;
    d.resolving = false;
    // A local verdict is not a plan (nothing was learnt about the domain).
    const bool local = plan.plan.verdict && plan.plan.verdict->local;
    d.valid_until =
        local ? absl::InfinitePast() : std::max(plan.valid_until, *now_ + absl::Seconds(1));
    d.verdict = plan.plan.verdict;
    d.route.reset();
    if (!d.verdict) {
      auto route = std::make_shared<dns::Route>();
      route->name = plan.plan.site;
      for (const dns::PlannedHost& host : plan.plan.hosts) {
        for (const dns::IpAddress& ip : host.addresses) {
          dns::Endpoint where = dns::MakeEndpoint(ip, config_.smtp.port);
          where.mx = host.name;
          where.preference = host.preference;
          route->hosts.push_back(std::move(where));
        }
      }
      d.route = std::move(route);
    }
    OnPlan(domain);
  });
}

// OnPlan - the domain's route or verdict is known (again): everyone waiting for
// it goes on.
void Routing::OnPlan(const std::string& domain) {
  auto it = domains_.find(domain);
  if (it == domains_.end()) return;
  const std::vector<Work*> waiting = std::exchange(it->second.waiting, {});
  const std::shared_ptr<const dns::Route> route = it->second.route;
  const std::optional<dns::MxVerdict> verdict = it->second.verdict;
  for (Work* w : waiting) {
    if (route) {
      callbacks_.routed(w, domain, route, /*by_dns=*/true);
    } else {
      callbacks_.decided(w, domain, *verdict);
    }
  }
}

void Routing::WatchSocket(int fd, bool readable, bool writable) {
  const unsigned events = (readable ? POLLIN : 0u) | (writable ? POLLOUT : 0u);
  auto it = watches_.find(fd);
  if (it != watches_.end() && it->second.armed && it->second.events != events) {
    // Interest changed, or the socket is about to close: the old poll goes.
    // Its completion (-ECANCELED, or events) carries the old generation and is
    // dropped, even if a new socket gets the same fd meanwhile.
    ring_->PrepPollRemove(reactor::MakeTag(static_cast<uint32_t>(fd), it->second.generation, kOpDnsPoll),
                          reactor::MakeTag(0, 0, kOpDnsPollRemove));
    it->second.armed = false;
  }
  if (events == 0) {
    if (it != watches_.end()) watches_.erase(it);
    return;
  }
  Watch& w = watches_[fd];
  if (w.armed) return;  // already polled for these events
  w.events = events;
  w.generation = ++generation_;
  w.armed = true;
  ring_->PrepPollAdd(fd, events,
                     reactor::MakeTag(static_cast<uint32_t>(fd), w.generation, kOpDnsPoll));
}

void Routing::OnPoll(uint64_t tag, int result) {
  const int fd = static_cast<int>(reactor::SlotOf(tag));
  auto it = watches_.find(fd);
  if (it == watches_.end() || it->second.generation != reactor::GenerationOf(tag)) {
    return;  // a poll removed since, or a socket closed since
  }
  it->second.armed = false;
  // An error on the poll itself: let c-ares read the socket and find out.
  const unsigned seen = result < 0 ? POLLIN : static_cast<unsigned>(result);
  resolver_->OnSocketReady(fd, (seen & (POLLIN | POLLERR | POLLHUP)) != 0, (seen & POLLOUT) != 0);
  // One-shot polls: watch again unless c-ares let go of the socket meanwhile
  // (or re-registered it, which armed a new poll).
  it = watches_.find(fd);
  if (it == watches_.end() || it->second.armed) return;
  WatchSocket(fd, (it->second.events & POLLIN) != 0, (it->second.events & POLLOUT) != 0);
}

std::optional<absl::Duration> Routing::NextTimeout() const { return resolver_->NextTimeout(); }

void Routing::OnTimer() {
  resolver_->OnTimer();
  const absl::Time now = *now_;
  if (now - last_sweep_ < kDomainSweepInterval) return;
  last_sweep_ = now;
  // Forget domains whose plan expired and that nobody waits for.
  absl::erase_if(domains_, [&](const auto& entry) {
    const DomainRoute& d = entry.second;
    return !d.resolving && d.waiting.empty() && d.valid_until <= now;
  });
}

}  // namespace volley::engine
