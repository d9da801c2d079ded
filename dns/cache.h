// cache.h - the resolver cache: answers by TTL, bounded LRU, one query per question
//
// SYNOPSIS
//   DnsCache cache(CacheOptions{});
//   DnsCache::Result r = cache.Lookup("a.test", RrType::kMx, now, waiter_id);
//   switch (r.action) {
//     case DnsCache::Action::kHit:        Use(*r.answer); break;
//     case DnsCache::Action::kQuery:      StartQuery("a.test", kMx); break;  // and wait
//     case DnsCache::Action::kWait:       break;     // woken by Complete
//     case DnsCache::Action::kOverloaded: Defer(); break;
//   }
//   // when the resolver answers (or gives up):
//   DnsCache::Completion done = cache.Complete("a.test", RrType::kMx, answer, now);
//   for (uint64_t id : done.waiters) Wake(id, done.answer);
//
// DESCRIPTION
//   Pure: no resolver and no clock; `now` comes with every call. Keys are (name,
//   type), the name compared in lowercase without a final dot.
//
//   How long an answer is kept (it answers while now < stored + ttl):
//   - kOk: its TTL, clamped to [min_ttl, max_ttl].
//   - kNoData, kNxDomain: the negative TTL of RFC 2308 section 5 (the driver passes
//     min(SOA TTL, SOA MINIMUM)), clamped to [negative_min_ttl, negative_max_ttl].
//   - kServFail (and timeouts): servfail_ttl, whatever the answer says, so a broken
//     domain is asked once per servfail_ttl, not once per recipient (RFC 2308
//     section 7.1 allows caching a server failure for up to five minutes).
//   At most max_entries answers are kept; storing one more evicts the least
//   recently used (a hit or a store counts as a use). An expired answer is dropped
//   when next looked up, or by eviction.
//
//   Coalescing: a Lookup that finds no live answer registers `waiter` on the
//   question. The first one gets kQuery and must start the query; the others get
//   kWait. Complete() stores the answer and hands back every waiter registered
//   since, the one that got kQuery included, each once, in the order they came
//   (an id registered twice comes back twice). So 10,000 recipients at one domain
//   make one MX query. A Complete() that nobody waits for (a late answer) is stored
//   all the same and wakes nobody.
//
//   A local answer (DnsAnswer::local: the resolver refused the question, its queue
//   full) wakes the waiters like any other, with `expires` = now, but is never
//   stored, and an answer stored before for the question stays: no server said
//   it, and keeping it for servfail_ttl would turn a moment's overload into
//   minutes of invented failure. The next Lookup asks again (kQuery).
//
// LIMITS
//   CacheOptions::max_entries answers; max_in_flight questions awaiting an answer and
//   max_waiters registered waiters in all: past either, Lookup says kOverloaded and
//   registers nothing (the caller defers and tries later, soon: no server was asked;
//   dns/router.h makes it a local verdict). Each question in flight is one
//   question of the resolver's, so max_in_flight's default (100000) is about what
//   the resolver holds by default, in flight and queued (dns/resolver.h,
//   max_pending + max_queued): the cache refuses about where the resolver would.
//
// CONTRACT
//   Single-threaded (one per shard). Every kQuery must be followed by a Complete()
//   for the same question, a failure or timeout as a kServFail answer: until then its
//   waiters stay registered. Answers are shared, immutable, and outlive their
//   eviction as long as someone holds them.
#ifndef VOLLEY_DNS_CACHE_H_
#define VOLLEY_DNS_CACHE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "dns/mx.h"

namespace volley::dns {

struct CacheOptions {
  // Answers kept, least recently used evicted first. Default: 10000.
  size_t max_entries = 10000;
  // Bounds on a positive answer's TTL. Defaults: 10 s and 1 day: a zero TTL
  // would send a query per recipient.
  absl::Duration min_ttl = absl::Seconds(10);
  absl::Duration max_ttl = absl::Hours(24);
  // Bounds on a negative answer's TTL (RFC 2308: one to three hours work well).
  // Defaults: 10 s and 1 hour.
  absl::Duration negative_min_ttl = absl::Seconds(10);
  absl::Duration negative_max_ttl = absl::Hours(1);
  // How long a SERVFAIL or timeout is kept. Default: 30 s.
  absl::Duration servfail_ttl = absl::Seconds(30);
  // Questions awaiting an answer at once: at most about the resolver's
  // max_pending + max_queued, so that a question let through finds room there
  // (LIMITS). Default: 100000.
  size_t max_in_flight = 100000;
  // Waiters registered at once, all questions together. Default: 1000000.
  size_t max_waiters = 1000000;
};

class DnsCache {
 public:
  enum class Action : uint8_t { kHit, kQuery, kWait, kOverloaded };
  struct Result {
    Action action = Action::kOverloaded;
    std::shared_ptr<const DnsAnswer> answer;  // kHit only
    absl::Time expires;                       // kHit only: when the answer stops answering
  };
  struct Completion {
    std::shared_ptr<const DnsAnswer> answer;  // as stored
    absl::Time expires;                       // as for Result
    std::vector<uint64_t> waiters;            // to wake, each with `answer`
  };

  explicit DnsCache(const CacheOptions& options = CacheOptions{});

  Result Lookup(std::string_view name, RrType type, absl::Time now, uint64_t waiter);

  // Find - the live answer, or nullptr; registers nothing, starts nothing.
  std::shared_ptr<const DnsAnswer> Find(std::string_view name, RrType type, absl::Time now);

  Completion Complete(std::string_view name, RrType type, DnsAnswer answer, absl::Time now);

  // How long `answer` would be kept (the clamped TTL); zero for a local one.
  absl::Duration TtlFor(const DnsAnswer& answer) const;

  size_t size() const { return entries_.size(); }
  size_t in_flight() const { return in_flight_.size(); }
  size_t waiters() const { return waiters_; }

 private:
  using Key = std::pair<std::string, RrType>;
  struct Entry {
    std::shared_ptr<const DnsAnswer> answer;
    absl::Time expires;
    std::list<Key>::iterator lru;  // position in lru_
  };

  static Key MakeKey(std::string_view name, RrType type);
  // The live entry for `key`, moved to the front; nullptr (and dropped) if expired.
  Entry* Live(const Key& key, absl::Time now);

  CacheOptions options_;
  absl::flat_hash_map<Key, Entry> entries_;
  std::list<Key> lru_;  // most recently used first
  absl::flat_hash_map<Key, std::vector<uint64_t>> in_flight_;
  size_t waiters_ = 0;
};

}  // namespace volley::dns

#endif  // VOLLEY_DNS_CACHE_H_
