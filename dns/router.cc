// router.cc - see router.h
#include "dns/router.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace volley::dns {

namespace {

// A cache waiter id: the request in the high bits, which answer in the low 8.
// Slot 0 is the MX answer; host i's A is 1 + 2i and its AAAA 2 + 2i.
constexpr int kSlotBits = 8;
uint64_t Waiter(uint64_t id, uint32_t slot) { return (id << kSlotBits) | slot; }
uint64_t RequestOf(uint64_t waiter) { return waiter >> kSlotBits; }
uint32_t SlotOf(uint64_t waiter) { return static_cast<uint32_t>(waiter & 0xff); }

static_assert(2 * kMaxRouterMxHosts + 2 < (1u << kSlotBits));

}  // namespace

struct Router::Request {
  std::string domain;
  Done done;
  MxHostList list;
  bool listed = false;
  std::vector<std::shared_ptr<const DnsAnswer>> a, aaaa;
  size_t outstanding = 0;
  absl::Time valid_until = absl::InfiniteFuture();
  bool cache_overloaded = false;  // some question refused by the cache, not asked
};

Router::Router(const RouterOptions& options, Resolver* resolver,
               std::function<absl::Time()> clock, std::function<uint64_t()> random)
    : options_(options),
      resolver_(resolver),
      clock_(std::move(clock)),
      random_(std::move(random)),
      cache_(options.cache) {
  options_.mx.max_mx_hosts = std::min(options_.mx.max_mx_hosts, kMaxRouterMxHosts);
}

Router::~Router() = default;

void Router::Plan(std::string_view domain, Done done) {
  if (requests_.size() >= options_.max_plans) {
    ++stats_.plans_refused;
    RoutePlan p;
    p.plan.verdict = MxVerdict{false, "4.4.3", "too many DNS plans under way", true};
    p.valid_until = clock_();
    done(std::move(p));
    return;
  }
  const uint64_t id = next_id_++;
  auto r = std::make_unique<Request>();
  r->domain = std::string(domain);
  r->done = std::move(done);
  requests_.emplace(id, std::move(r));
  Need(id, std::string(domain), RrType::kMx, 0);
}

void Router::Need(uint64_t id, const std::string& name, RrType type, uint32_t slot) {
  DnsCache::Result found = cache_.Lookup(name, type, clock_(), Waiter(id, slot));
  switch (found.action) {
    case DnsCache::Action::kHit:
      ++stats_.cache_hits;
      Deliver(Waiter(id, slot), found.answer, found.expires);
      return;
    case DnsCache::Action::kWait:
      ++stats_.cache_misses;
      return;
    case DnsCache::Action::kQuery:
      ++stats_.cache_misses;
      resolver_->Ask(name, type, [this, name, type](DnsAnswer answer) {
        if (answer.local) {
          ++stats_.local_answers;
        } else {
          ++stats_.answers[static_cast<size_t>(answer.kind)];
        }
        // A local answer wakes the waiters but is not kept (cache.h).
        DnsCache::Completion done = cache_.Complete(name, type, std::move(answer), clock_());
        for (uint64_t waiter : done.waiters) Deliver(waiter, done.answer, done.expires);
      });
      return;
    case DnsCache::Action::kOverloaded: {
      // Never asked, so a local failure, and the plan's verdict says which bound.
      ++stats_.cache_overloaded;
      if (auto it = requests_.find(id); it != requests_.end()) it->second->cache_overloaded = true;
      DnsAnswer refused;  // kServFail
      refused.local = true;
      Deliver(Waiter(id, slot), std::make_shared<const DnsAnswer>(std::move(refused)), clock_());
      return;
    }
  }
}

void Router::Deliver(uint64_t waiter, const std::shared_ptr<const DnsAnswer>& answer,
                     absl::Time expires) {
  const uint64_t id = RequestOf(waiter);
  const uint32_t slot = SlotOf(waiter);
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  Request& r = *it->second;
  r.valid_until = std::min(r.valid_until, expires);
  if (slot == 0) {
    r.list = SelectMxHosts(r.domain, *answer, options_.mx, random_);
    r.listed = true;
    if (r.list.verdict || r.list.hosts.empty()) {
      Complete(id);
      return;
    }
    const size_t n = r.list.hosts.size();
    const bool aaaa = WantsAaaa(options_.mx);
    r.a.assign(n, nullptr);
    r.aaaa.assign(n, nullptr);
    r.outstanding = n * (aaaa ? 2 : 1);
    std::vector<std::string> names;
    for (const MxHost& h : r.list.hosts) names.push_back(h.name);
    // The last of these may complete the request (and free `r`): use only ids.
    for (size_t i = 0; i < n; ++i) {
      Need(id, names[i], RrType::kA, static_cast<uint32_t>(1 + 2 * i));
      if (aaaa) Need(id, names[i], RrType::kAaaa, static_cast<uint32_t>(2 + 2 * i));
    }
    return;
  }
  const size_t host = (slot - 1) / 2;
  if (!r.listed || host >= r.a.size()) return;  // not a question of this request
  auto& into = (slot - 1) % 2 == 0 ? r.a[host] : r.aaaa[host];
  if (into != nullptr) return;  // already answered
  into = answer;
  if (--r.outstanding == 0) Complete(id);
}

void Router::Complete(uint64_t id) {
  auto it = requests_.find(id);
  std::unique_ptr<Request> r = std::move(it->second);
  requests_.erase(it);
  RoutePlan p;
  p.valid_until = r->valid_until;
  std::vector<HostAnswers> answers;
  for (size_t i = 0; i < r->a.size(); ++i) answers.push_back({r->a[i].get(), r->aaaa[i].get()});
  p.plan = PlanDelivery(r->list, answers, options_.mx);
  if (p.plan.verdict && p.plan.verdict->local && r->cache_overloaded) {
    // mx.cc blames the resolver's queue for every local answer; here it was the
    // cache's bound on questions in flight.
    p.plan.verdict->reason = absl::StrCat(r->list.domain, ": DNS lookups queue full");
  }
  r->done(std::move(p));
}

}  // namespace volley::dns
