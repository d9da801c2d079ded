#include "dns/cache.h"

#include <algorithm>

#include "absl/strings/ascii.h"

namespace volley::dns {

DnsCache::DnsCache(const CacheOptions& options) : options_(options) {}

DnsCache::Key DnsCache::MakeKey(std::string_view name, RrType type) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  std::string lower(name);
  absl::AsciiStrToLower(&lower);
  return Key(std::move(lower), type);
}

absl::Duration DnsCache::TtlFor(const DnsAnswer& answer) const {
  if (answer.local) return absl::ZeroDuration();  // never kept
  const absl::Duration ttl = absl::Seconds(answer.ttl);
  switch (answer.kind) {
    case AnswerKind::kOk:
      return std::clamp(ttl, options_.min_ttl, std::max(options_.min_ttl, options_.max_ttl));
    case AnswerKind::kNoData:
    case AnswerKind::kNxDomain:
      return std::clamp(ttl, options_.negative_min_ttl,
                        std::max(options_.negative_min_ttl, options_.negative_max_ttl));
    case AnswerKind::kServFail:
      break;
  }
  return options_.servfail_ttl;
}

DnsCache::Entry* DnsCache::Live(const Key& key, absl::Time now) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;
  if (now >= it->second.expires) {
    lru_.erase(it->second.lru);
    entries_.erase(it);
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return &it->second;
}

DnsCache::Result DnsCache::Lookup(std::string_view name, RrType type, absl::Time now,
                                  uint64_t waiter) {
  Key key = MakeKey(name, type);
  Result result;
  if (const Entry* e = Live(key, now)) {
    result.action = Action::kHit;
    result.answer = e->answer;
    result.expires = e->expires;
    return result;
  }
  if (waiters_ >= options_.max_waiters) return result;  // kOverloaded
  auto it = in_flight_.find(key);
  if (it != in_flight_.end()) {
    it->second.push_back(waiter);
    ++waiters_;
    result.action = Action::kWait;
    return result;
  }
  if (in_flight_.size() >= options_.max_in_flight) return result;  // kOverloaded
  in_flight_[std::move(key)].push_back(waiter);
  ++waiters_;
  result.action = Action::kQuery;
  return result;
}

std::shared_ptr<const DnsAnswer> DnsCache::Find(std::string_view name, RrType type,
                                                absl::Time now) {
  const Entry* e = Live(MakeKey(name, type), now);
  return e != nullptr ? e->answer : nullptr;
}

DnsCache::Completion DnsCache::Complete(std::string_view name, RrType type, DnsAnswer answer,
                                        absl::Time now) {
  Key key = MakeKey(name, type);
  Completion done;
  const bool local = answer.local;
  const absl::Duration ttl = TtlFor(answer);
  done.answer = std::make_shared<const DnsAnswer>(std::move(answer));
  done.expires = now + ttl;
  if (auto it = in_flight_.find(key); it != in_flight_.end()) {
    done.waiters = std::move(it->second);
    waiters_ -= done.waiters.size();
    in_flight_.erase(it);
  }
  // Our own refusal, not the DNS's word: never stored (see cache.h).
  if (local || options_.max_entries == 0) return done;
  auto [it, inserted] = entries_.try_emplace(key);
  Entry& e = it->second;
  e.answer = done.answer;
  e.expires = done.expires;
  if (inserted) {
    lru_.push_front(std::move(key));
    e.lru = lru_.begin();
  } else {
    lru_.splice(lru_.begin(), lru_, e.lru);
  }
  while (entries_.size() > options_.max_entries) {
    entries_.erase(lru_.back());
    lru_.pop_back();
  }
  return done;
}

}  // namespace volley::dns
