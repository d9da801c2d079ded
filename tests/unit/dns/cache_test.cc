#include "dns/cache.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::dns {
namespace {

using Action = DnsCache::Action;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

DnsAnswer Answer(AnswerKind kind, uint32_t ttl) {
  DnsAnswer a;
  a.kind = kind;
  a.ttl = ttl;
  if (kind == AnswerKind::kOk) a.mx.push_back({10, "mx.a.test"});
  return a;
}

// Stores `answer` for name/type at `now` through the normal query path.
void Store(DnsCache& cache, const std::string& name, RrType type, DnsAnswer answer,
           absl::Time now) {
  ASSERT_EQ(cache.Lookup(name, type, now, 0).action, Action::kQuery) << name;
  cache.Complete(name, type, std::move(answer), now);
}

TEST(DnsCache, PositiveAnswerLastsItsTtl) {
  DnsCache cache;
  Store(cache, "a.test", RrType::kMx, Answer(AnswerKind::kOk, 300), kT0);
  DnsCache::Result hit = cache.Lookup("a.test", RrType::kMx, kT0 + absl::Seconds(299), 1);
  EXPECT_EQ(hit.action, Action::kHit);
  ASSERT_NE(hit.answer, nullptr);
  EXPECT_THAT(hit.answer->mx, ElementsAre(MxRecord{10, "mx.a.test"}));
  EXPECT_EQ(cache.waiters(), 0u);  // a hit registers nothing
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, kT0 + absl::Seconds(300), 2).action,
            Action::kQuery);
  EXPECT_EQ(cache.size(), 0u);  // the expired answer is gone
}

TEST(DnsCache, PositiveTtlIsClamped) {
  CacheOptions o;
  o.min_ttl = absl::Seconds(10);
  o.max_ttl = absl::Hours(24);
  DnsCache cache(o);
  EXPECT_EQ(cache.TtlFor(Answer(AnswerKind::kOk, 0)), absl::Seconds(10));
  EXPECT_EQ(cache.TtlFor(Answer(AnswerKind::kOk, 7 * 86400)), absl::Hours(24));
  EXPECT_EQ(cache.TtlFor(Answer(AnswerKind::kOk, 600)), absl::Seconds(600));

  Store(cache, "zero.test", RrType::kA, Answer(AnswerKind::kOk, 0), kT0);
  EXPECT_EQ(cache.Lookup("zero.test", RrType::kA, kT0 + absl::Seconds(9), 1).action,
            Action::kHit);
  EXPECT_EQ(cache.Lookup("zero.test", RrType::kA, kT0 + absl::Seconds(10), 1).action,
            Action::kQuery);
  Store(cache, "long.test", RrType::kA, Answer(AnswerKind::kOk, 7 * 86400), kT0);
  EXPECT_EQ(cache.Lookup("long.test", RrType::kA, kT0 + absl::Hours(24) - absl::Seconds(1), 1)
                .action,
            Action::kHit);
  EXPECT_EQ(cache.Lookup("long.test", RrType::kA, kT0 + absl::Hours(24), 1).action,
            Action::kQuery);
}

TEST(DnsCache, NegativeAnswersLastTheirClampedNegativeTtl) {
  CacheOptions o;
  o.negative_min_ttl = absl::Seconds(10);
  o.negative_max_ttl = absl::Hours(1);
  DnsCache cache(o);
  Store(cache, "gone.test", RrType::kMx, Answer(AnswerKind::kNxDomain, 600), kT0);
  DnsCache::Result hit = cache.Lookup("gone.test", RrType::kMx, kT0 + absl::Seconds(599), 1);
  ASSERT_EQ(hit.action, Action::kHit);
  EXPECT_EQ(hit.answer->kind, AnswerKind::kNxDomain);
  EXPECT_EQ(cache.Lookup("gone.test", RrType::kMx, kT0 + absl::Seconds(600), 1).action,
            Action::kQuery);

  Store(cache, "plain.test", RrType::kMx, Answer(AnswerKind::kNoData, 7 * 86400), kT0);
  EXPECT_EQ(cache.Lookup("plain.test", RrType::kMx, kT0 + absl::Minutes(59), 1).action,
            Action::kHit);
  EXPECT_EQ(cache.Lookup("plain.test", RrType::kMx, kT0 + absl::Hours(1), 1).action,
            Action::kQuery);
  EXPECT_EQ(cache.TtlFor(Answer(AnswerKind::kNoData, 1)), absl::Seconds(10));
}

TEST(DnsCache, ServFailIsKeptBrieflyWhateverItsTtl) {
  CacheOptions o;
  o.servfail_ttl = absl::Seconds(30);
  DnsCache cache(o);
  Store(cache, "sick.test", RrType::kMx, Answer(AnswerKind::kServFail, 86400), kT0);
  DnsCache::Result hit = cache.Lookup("sick.test", RrType::kMx, kT0 + absl::Seconds(29), 1);
  ASSERT_EQ(hit.action, Action::kHit);
  EXPECT_EQ(hit.answer->kind, AnswerKind::kServFail);
  EXPECT_EQ(cache.Lookup("sick.test", RrType::kMx, kT0 + absl::Seconds(30), 1).action,
            Action::kQuery);
}

TEST(DnsCache, EvictsTheLeastRecentlyUsedAtTheBound) {
  CacheOptions o;
  o.max_entries = 3;
  DnsCache cache(o);
  Store(cache, "a.test", RrType::kMx, Answer(AnswerKind::kOk, 300), kT0);
  Store(cache, "b.test", RrType::kMx, Answer(AnswerKind::kOk, 300), kT0);
  Store(cache, "c.test", RrType::kMx, Answer(AnswerKind::kOk, 300), kT0);
  EXPECT_EQ(cache.size(), 3u);
  // Used in the order b, a, c: b, stored second, is now the least recently used.
  std::shared_ptr<const DnsAnswer> held = cache.Find("b.test", RrType::kMx, kT0);
  ASSERT_NE(held, nullptr);
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, kT0, 1).action, Action::kHit);
  EXPECT_NE(cache.Find("c.test", RrType::kMx, kT0), nullptr);
  Store(cache, "d.test", RrType::kMx, Answer(AnswerKind::kOk, 300), kT0);
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.Find("b.test", RrType::kMx, kT0), nullptr);
  EXPECT_NE(cache.Find("a.test", RrType::kMx, kT0), nullptr);
  EXPECT_NE(cache.Find("c.test", RrType::kMx, kT0), nullptr);
  EXPECT_NE(cache.Find("d.test", RrType::kMx, kT0), nullptr);
  // An evicted answer outlives eviction in the hands of whoever holds it.
  EXPECT_THAT(held->mx, ElementsAre(MxRecord{10, "mx.a.test"}));

  // Re-storing an existing key does not grow the cache or evict anything.
  cache.Complete("c.test", RrType::kMx, Answer(AnswerKind::kOk, 300), kT0);
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_NE(cache.Find("a.test", RrType::kMx, kT0), nullptr);
}

TEST(DnsCache, TenThousandRecipientsMakeOneQuery) {
  DnsCache cache;
  constexpr uint64_t kRecipients = 10000;
  size_t queries = 0;
  size_t waits = 0;
  for (uint64_t id = 0; id < kRecipients; ++id) {
    switch (cache.Lookup("big.test", RrType::kMx, kT0 + absl::Milliseconds(id % 100), id).action) {
      case Action::kQuery:
        ++queries;
        break;
      case Action::kWait:
        ++waits;
        break;
      default:
        ADD_FAILURE() << "unexpected action for waiter " << id;
    }
  }
  EXPECT_EQ(queries, 1u);
  EXPECT_EQ(waits, kRecipients - 1);
  EXPECT_EQ(cache.in_flight(), 1u);
  EXPECT_EQ(cache.waiters(), kRecipients);

  DnsCache::Completion done =
      cache.Complete("big.test", RrType::kMx, Answer(AnswerKind::kOk, 300), kT0 + absl::Seconds(1));
  ASSERT_NE(done.answer, nullptr);
  EXPECT_EQ(done.answer->kind, AnswerKind::kOk);
  std::vector<uint64_t> want(kRecipients);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(done.waiters, want);  // every waiter once, in the order they came
  EXPECT_EQ(cache.in_flight(), 0u);
  EXPECT_EQ(cache.waiters(), 0u);

  // Recipients that come later are answered from the cache.
  EXPECT_EQ(cache.Lookup("big.test", RrType::kMx, kT0 + absl::Seconds(2), 1).action,
            Action::kHit);
  // A second completion wakes nobody again.
  EXPECT_THAT(cache.Complete("big.test", RrType::kMx, Answer(AnswerKind::kOk, 300),
                             kT0 + absl::Seconds(2))
                  .waiters,
              IsEmpty());
}

TEST(DnsCache, CompletionNobodyWaitsForIsStored) {
  DnsCache cache;
  DnsCache::Completion done =
      cache.Complete("late.test", RrType::kA, Answer(AnswerKind::kOk, 300), kT0);
  EXPECT_THAT(done.waiters, IsEmpty());
  ASSERT_NE(done.answer, nullptr);
  EXPECT_EQ(cache.in_flight(), 0u);
  EXPECT_EQ(cache.Lookup("late.test", RrType::kA, kT0 + absl::Seconds(1), 7).action,
            Action::kHit);
}

TEST(DnsCache, QuestionsAreKeyedByNameInLowercaseAndType) {
  DnsCache cache;
  EXPECT_EQ(cache.Lookup("A.Test.", RrType::kMx, kT0, 1).action, Action::kQuery);
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, kT0, 2).action, Action::kWait);
  EXPECT_EQ(cache.Lookup("a.test", RrType::kA, kT0, 3).action, Action::kQuery);
  EXPECT_EQ(cache.Lookup("a.test", RrType::kAaaa, kT0, 4).action, Action::kQuery);
  EXPECT_EQ(cache.in_flight(), 3u);
  EXPECT_THAT(cache.Complete("a.TEST", RrType::kMx, Answer(AnswerKind::kOk, 300), kT0).waiters,
              ElementsAre(1u, 2u));
  EXPECT_THAT(cache.Complete("a.test", RrType::kA, Answer(AnswerKind::kNoData, 300), kT0).waiters,
              ElementsAre(3u));
  EXPECT_EQ(cache.Find("a.test.", RrType::kMx, kT0)->kind, AnswerKind::kOk);
  EXPECT_EQ(cache.Find("a.test", RrType::kA, kT0)->kind, AnswerKind::kNoData);
  EXPECT_EQ(cache.Find("a.test", RrType::kAaaa, kT0), nullptr);  // still in flight
}

TEST(DnsCache, ExpiredAnswerStartsOneNewQuery) {
  DnsCache cache;
  Store(cache, "a.test", RrType::kMx, Answer(AnswerKind::kOk, 60), kT0);
  const absl::Time later = kT0 + absl::Seconds(61);
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, later, 1).action, Action::kQuery);
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, later, 2).action, Action::kWait);
  EXPECT_EQ(cache.Find("a.test", RrType::kMx, later), nullptr);
  EXPECT_THAT(cache.Complete("a.test", RrType::kMx, Answer(AnswerKind::kOk, 60), later).waiters,
              ElementsAre(1u, 2u));
}

TEST(DnsCache, OverloadedRegistersNothing) {
  CacheOptions o;
  o.max_in_flight = 2;
  o.max_waiters = 4;
  DnsCache cache(o);
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, kT0, 1).action, Action::kQuery);
  EXPECT_EQ(cache.Lookup("b.test", RrType::kMx, kT0, 2).action, Action::kQuery);
  EXPECT_EQ(cache.Lookup("c.test", RrType::kMx, kT0, 3).action, Action::kOverloaded);
  EXPECT_EQ(cache.in_flight(), 2u);
  // Waiting on a question already asked is still possible, up to max_waiters.
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, kT0, 4).action, Action::kWait);
  EXPECT_EQ(cache.Lookup("b.test", RrType::kMx, kT0, 5).action, Action::kWait);
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, kT0, 6).action, Action::kOverloaded);
  EXPECT_EQ(cache.waiters(), 4u);
  EXPECT_THAT(cache.Complete("a.test", RrType::kMx, Answer(AnswerKind::kOk, 300), kT0).waiters,
              ElementsAre(1u, 4u));
  EXPECT_EQ(cache.waiters(), 2u);
  EXPECT_EQ(cache.Lookup("c.test", RrType::kMx, kT0, 3).action, Action::kQuery);
}

DnsAnswer QueueFull() {
  DnsAnswer a = Answer(AnswerKind::kServFail, 300);
  a.local = true;
  return a;
}

TEST(DnsCache, LocalAnswerWakesWaitersButIsNeverStored) {
  DnsCache cache;
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, kT0, 1).action, Action::kQuery);
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, kT0, 2).action, Action::kWait);
  DnsCache::Completion done = cache.Complete("a.test", RrType::kMx, QueueFull(), kT0);
  EXPECT_THAT(done.waiters, ElementsAre(1u, 2u));
  ASSERT_NE(done.answer, nullptr);
  EXPECT_TRUE(done.answer->local);
  EXPECT_EQ(done.expires, kT0);  // good for no time at all
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.in_flight(), 0u);
  EXPECT_EQ(cache.waiters(), 0u);
  EXPECT_EQ(cache.Find("a.test", RrType::kMx, kT0), nullptr);
  // Asked again at once, not answered from the cache with an invented failure.
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, kT0, 3).action, Action::kQuery);
  EXPECT_EQ(cache.TtlFor(QueueFull()), absl::ZeroDuration());
}

TEST(DnsCache, LocalAnswerLeavesAStoredAnswerAlone) {
  // A late refusal for a question answered meanwhile replaces nothing.
  DnsCache cache;
  Store(cache, "a.test", RrType::kMx, Answer(AnswerKind::kOk, 300), kT0);
  cache.Complete("a.test", RrType::kMx, QueueFull(), kT0 + absl::Seconds(1));
  DnsCache::Result hit = cache.Lookup("a.test", RrType::kMx, kT0 + absl::Seconds(2), 1);
  ASSERT_EQ(hit.action, Action::kHit);
  EXPECT_EQ(hit.answer->kind, AnswerKind::kOk);
}

TEST(DnsCache, DefaultInFlightBoundIsTheResolversCapacity) {
  // Each question in flight here is one of the resolver's, in flight or queued:
  // the default must not refuse far below what the resolver would take.
  EXPECT_GE(CacheOptions{}.max_in_flight, size_t{100000});
}

TEST(DnsCache, ZeroEntriesCachesNothingButStillCoalesces) {
  CacheOptions o;
  o.max_entries = 0;
  DnsCache cache(o);
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, kT0, 1).action, Action::kQuery);
  EXPECT_EQ(cache.Lookup("a.test", RrType::kMx, kT0, 2).action, Action::kWait);
  DnsCache::Completion done =
      cache.Complete("a.test", RrType::kMx, Answer(AnswerKind::kOk, 300), kT0);
  EXPECT_THAT(done.waiters, ElementsAre(1u, 2u));
  EXPECT_EQ(cache.size(), 0u);
}

}  // namespace
}  // namespace volley::dns
