// The cluster agent against a real redis-server: shared rates and leases
// between two nodes, the fallback share while Redis is away, a dead node's
// leases, lost scripts, shared backoff.
#include "cluster/agent.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "cluster/allowance.h"
#include "cluster/redis_link.h"
#include "cluster/scripts.h"
#include "gtest/gtest.h"
#include "tests/unit/cluster/redis_server.h"

namespace volley::cluster {
namespace {

constexpr char kPool[] = "mx.example.test:25|bulk";

// HungryShard - a shard with more work than its limits allow: takes every
// message permit it gets, opens every connection it may, closes those above
// what its node may hold.
class HungryShard {
 public:
  explicit HungryShard(Allowance* a) : a_(a), thread_([this] { Run(); }) {}
  ~HungryShard() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t taken() const { return taken_.load(); }

 private:
  void Run() {
    while (!stop_) {
      // At most a turn's worth: with no rate limit every take succeeds.
      for (int i = 0; i < 1000 && a_->TakeMessage(); ++i) taken_.fetch_add(1);
      while (a_->OverAllowed()) a_->Closed();
      for (int i = 0; i < 100 && a_->TryOpen(); ++i) {
      }
      absl::SleepFor(absl::Milliseconds(2));
    }
  }

  Allowance* const a_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> taken_{0};
  std::thread thread_;
};

Options NodeOptions(const RedisServer& redis, const std::string& node) {
  Options o;
  o.redis = {redis.address()};
  o.node = node;
  o.key_prefix = "t:";
  return o;
}

// The GCRA script alone, against a real redis-server: Ask runs it once with
// the arguments the agent would pass (rate, burst, want, node, window[, share]).
class GcraScriptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(redis_.Start());
    link_ = std::make_unique<RedisLink>(std::vector<std::string>{redis_.address()},
                                        absl::Seconds(2));
    take_ = link_->AddScript(std::string(kGcraTakeScript));
    ASSERT_TRUE(link_->Connect().ok());
  }
  int64_t Ask(std::vector<std::string> args) {
    auto r = link_->RoundTrip({link_->Script(take_, {key_, askers_}, std::move(args))});
    EXPECT_TRUE(r.ok());
    return r.ok() ? (*r)[0].Int(-1) : -1;
  }

  RedisServer redis_;
  std::unique_ptr<RedisLink> link_;
  size_t take_ = 0;
  const std::string key_ = PoolKey("t:", kPool, "rate:msg");
  const std::string askers_ = PoolKey("t:", kPool, "askers:msg");
};

TEST_F(GcraScriptTest, GrantsPartiallyWithinTheBurstByRedisClock) {
  // 10 a second (an interval of 100 ms), a burst of 5.
  const auto ask = [&](int n) { return Ask({"10", "5", std::to_string(n), "a", "1000000"}); };
  const auto redis_now_us = [&] {
    const RedisReply t = redis_.Command({"TIME"});
    return std::stoll(t.elements.at(0).text) * 1000000 + std::stoll(t.elements.at(1).text);
  };
  const int64_t before = redis_now_us();
  EXPECT_EQ(ask(3), 3);
  EXPECT_EQ(ask(3), 2);  // partial: the burst holds 5
  const int64_t after = redis_now_us();
  // The arrival time kept is Redis's TIME plus 5 intervals: the script used
  // Redis's clock (this process's clock is not involved at all).
  const int64_t tat = std::stoll(redis_.Command({"GET", key_}).text);
  EXPECT_GE(tat, before + 500000);
  EXPECT_LE(tat, after + 500000 + 1);
  // With the burst used, nothing until the TAT comes within the burst again.
  const RedisReply pttl = redis_.Command({"PTTL", key_});
  EXPECT_GT(pttl.Int(), 0);  // it expires: nothing left behind
  // Move the TAT into the past as time would: the whole burst again, no more.
  redis_.Command({"SET", key_, std::to_string(before - 10000000)});
  EXPECT_EQ(ask(9), 5);
}

TEST_F(GcraScriptTest, SplitsTheBurstBetweenHungryNodes) {
  const auto ask = [&](const char* node, int n) {
    return Ask({"1", "10", std::to_string(n), node, "60000000"});
  };
  // Alone, a node may take the whole burst.
  EXPECT_EQ(ask("a", 10), 10);
  // A full burst again (the arrival time moved back, as ten seconds would).
  redis_.Command({"SET", key_, "1000"});
  // Now two nodes want 10 each within the window: each gets at most half.
  EXPECT_EQ(ask("b", 10), 5);
  EXPECT_EQ(ask("a", 10), 5);
  EXPECT_EQ(ask("b", 10), 0);  // the burst is spent: the cap is no floor
}

// The bucket holds more than a round of asks brings (the agent: two asks'
// worth): the asks of a round split one share, and room built up beyond it
// (the asks came late) goes to whoever asks, so it is not left to overflow.
TEST_F(GcraScriptTest, SplitsAShareAndGivesTheRoomBeyondIt) {
  const auto ask = [&](const char* node, int n) {
    return Ask({"1", "20", std::to_string(n), node, "60000000", "10"});
  };
  EXPECT_EQ(ask("a", 10), 10);  // alone: its whole want; 10 of the 20 left
  EXPECT_EQ(ask("b", 10), 5);   // two want 10 of a share of 10: half each
  EXPECT_EQ(ask("a", 10), 5);
  EXPECT_EQ(ask("b", 10), 0);   // the bucket is empty
  redis_.Command({"SET", key_, "1000"});  // full again: 20, a share beyond the round's
  EXPECT_EQ(ask("b", 10), 10);  // its half of a share, and the 10 beyond it
  EXPECT_EQ(ask("a", 10), 5);   // its half of the share left
}

TEST(AgentTest, TwoNodesShareTheRateAndTheConnections) {
  RedisServer redis;
  ASSERT_TRUE(redis.Start());
  constexpr double kRate = 200;
  constexpr int kMax = 4;
  Allowances table_a, table_b;
  Allowance* a = table_a.Join(kPool);
  Allowance* b = table_b.Join(kPool);
  for (Allowance* x : {a, b}) x->SetLimits({.message_rate = kRate, .max_connections = kMax});
  // A long ttl (renewal every 5 s): b must get its part because a, holding
  // the full set, asks as often as b does, not because a renewal came.
  Options oa = NodeOptions(redis, "a");
  Options ob = NodeOptions(redis, "b");
  oa.lease_ttl = ob.lease_ttl = absl::Seconds(20);
  Agent agent_a(oa, &table_a);
  Agent agent_b(ob, &table_b);
  const absl::Time start = absl::Now();
  // a first, alone until it holds every connection: the case where the
  // newcomer has to win places back.
  ASSERT_TRUE(agent_a.Start().ok());
  HungryShard shard_a(a);
  ASSERT_TRUE(WaitFor([&] { return a->connections_allowed() == kMax; }));
  ASSERT_TRUE(agent_b.Start().ok());
  HungryShard shard_b(b);
  const absl::Time b_start = absl::Now();

  const std::string leases = PoolKey("t:", kPool, "leases");
  int most_leases = 0, most_open = 0, most_allowed = 0;
  while (absl::Now() - b_start < absl::Seconds(3)) {
    most_leases = std::max<int>(most_leases, static_cast<int>(redis.Command({"ZCARD", leases}).Int()));
    most_open = std::max(most_open, a->open() + b->open());
    most_allowed = std::max(most_allowed, a->connections_allowed() + b->connections_allowed());
    absl::SleepFor(absl::Milliseconds(20));
  }
  const bool both_held = a->connections_allowed() >= 1 && b->connections_allowed() >= 1;
  shard_a.Stop();
  shard_b.Stop();
  agent_a.Stop();
  agent_b.Stop();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  const uint64_t total = shard_a.taken() + shard_b.taken();
  std::fprintf(stderr, "%.2f s at %.0f/s: a took %lu, b took %lu (%.0f%% of the rate)\n", seconds,
               kRate, static_cast<unsigned long>(shard_a.taken()),
               static_cast<unsigned long>(shard_b.taken()),
               100.0 * static_cast<double>(total) / (kRate * seconds));
  // The rate over the whole run, plus what Redis's bucket holds (two asks'
  // worth: at 200/s an ask is a batch's, 20): nothing granted twice, by both
  // or by one.
  EXPECT_LE(static_cast<double>(total), kRate * seconds + 2 * kRate * 0.1) << seconds << " s";
  EXPECT_GT(total, 0u);
  // Each node gets a fair part (the GCRA script splits a burst between hungry
  // nodes by their wants).
  EXPECT_GE(shard_a.taken(), total / 4) << shard_a.taken() << " of " << total;
  EXPECT_GE(shard_b.taken(), total / 4) << shard_b.taken() << " of " << total;
  EXPECT_LE(most_leases, kMax);
  EXPECT_LE(most_open, kMax);
  EXPECT_LE(most_allowed, kMax);
  EXPECT_TRUE(both_held) << "one node kept every connection";
  EXPECT_FALSE(agent_a.stats().fallback);
  EXPECT_EQ(agent_a.stats().live_nodes, 2);
  // Stop gave everything back.
  EXPECT_EQ(redis.Command({"ZCARD", leases}).Int(-1), 0);
  EXPECT_EQ(redis.Command({"ZCARD", NodesKey("t:")}).Int(-1), 0);
}

TEST(AgentTest, FallsBackToItsShareWhileRedisIsAwayAndSharesAgainAfter) {
  RedisServer redis;
  ASSERT_TRUE(redis.Start());
  Allowances table_a, table_b;
  Allowance* a = table_a.Join(kPool);
  Allowance* b = table_b.Join(kPool);
  for (Allowance* x : {a, b}) x->SetLimits({.message_rate = 100, .max_connections = 4});
  Options oa = NodeOptions(redis, "a");
  Options ob = NodeOptions(redis, "b");
  oa.timeout = ob.timeout = absl::Milliseconds(100);
  Agent agent_a(oa, &table_a);
  Agent agent_b(ob, &table_b);
  ASSERT_TRUE(agent_a.Start().ok());
  ASSERT_TRUE(agent_b.Start().ok());
  HungryShard shard_a(a), shard_b(b);
  ASSERT_TRUE(WaitFor([&] {
    return table_a.shared() && table_b.shared() && agent_a.stats().live_nodes == 2 &&
           agent_b.stats().live_nodes == 2;
  }));

  redis.Stop();
  ASSERT_TRUE(WaitFor([&] { return agent_a.stats().fallback && agent_b.stats().fallback; }));
  EXPECT_FALSE(table_a.shared());
  EXPECT_FALSE(table_b.shared());
  EXPECT_FALSE(agent_a.stats().redis_up);
  // The share: half of each limit for each of the 2 nodes last seen.
  ASSERT_TRUE(WaitFor([&] { return a->connections_allowed() == 2 && b->connections_allowed() == 2; }));
  // Deliveries go on at the share: 100/2 a second, one batch's worth (5) at a
  // time, never more than that over a window plus one batch kept.
  const uint64_t before = shard_a.taken();
  const absl::Time t0 = absl::Now();
  ASSERT_TRUE(WaitFor([&] { return shard_a.taken() >= before + 20; }));
  const double window = absl::ToDoubleSeconds(absl::Now() - t0);
  EXPECT_LE(static_cast<double>(shard_a.taken() - before), 50 * window + 2 * 5 + 5);

  ASSERT_TRUE(redis.Start(redis.port()));
  ASSERT_TRUE(WaitFor([&] {
    return !agent_a.stats().fallback && !agent_b.stats().fallback && table_a.shared() &&
           table_b.shared();
  }));
  EXPECT_TRUE(agent_a.stats().redis_up);
  EXPECT_EQ(agent_a.stats().fallbacks, 1u);
  EXPECT_EQ(agent_b.stats().fallbacks, 1u);
  // Shared again: leases are back in Redis.
  ASSERT_TRUE(WaitFor([&] {
    return redis.Command({"ZCARD", PoolKey("t:", kPool, "leases")}).Int() > 0;
  }));
}

TEST(AgentTest, ADeadNodesLeasesExpireAndGoToTheOthers) {
  RedisServer redis;
  ASSERT_TRUE(redis.Start());
  constexpr int kMax = 3;
  Allowances table_a, table_b;
  Allowance* a = table_a.Join(kPool);
  Allowance* b = table_b.Join(kPool);
  for (Allowance* x : {a, b}) x->SetLimits({.max_connections = kMax});
  Options oa = NodeOptions(redis, "a");
  Options ob = NodeOptions(redis, "b");
  oa.lease_ttl = ob.lease_ttl = absl::Seconds(1);
  const std::string leases = PoolKey("t:", kPool, "leases");

  Agent agent_a(oa, &table_a);
  ASSERT_TRUE(agent_a.Start().ok());
  {
    HungryShard shard_a(a);
    ASSERT_TRUE(WaitFor([&] { return a->connections_allowed() == kMax; }));
    agent_a.StopWithoutGivingBack();  // a dies holding every lease
  }
  const RedisReply held = redis.Command({"ZRANGE", leases, "0", "-1"});
  ASSERT_EQ(held.elements.size(), static_cast<size_t>(kMax));
  for (const RedisReply& m : held.elements) EXPECT_TRUE(absl::StartsWith(m.text, "a#")) << m.text;

  Agent agent_b(ob, &table_b);
  ASSERT_TRUE(agent_b.Start().ok());
  HungryShard shard_b(b);
  // While a's leases last, b gets none of them; once they expire, all.
  int most = 0;
  ASSERT_TRUE(WaitFor([&] {
    most = std::max<int>(most, static_cast<int>(redis.Command({"ZCARD", leases}).Int()));
    return b->connections_allowed() == kMax;
  }));
  EXPECT_LE(most, kMax);
  const RedisReply now_held = redis.Command({"ZRANGE", leases, "0", "-1"});
  ASSERT_EQ(now_held.elements.size(), static_cast<size_t>(kMax));
  for (const RedisReply& m : now_held.elements) {
    EXPECT_TRUE(absl::StartsWith(m.text, "b#")) << m.text;
  }
}

TEST(AgentTest, TakesTheNextServerWhenTheFirstIsDown) {
  RedisServer dead, redis;
  ASSERT_TRUE(dead.Start());
  dead.Stop();  // its port now refuses
  ASSERT_TRUE(redis.Start());
  Allowances table;
  Allowance* a = table.Join(kPool);
  a->SetLimits({.message_rate = 100});
  Options o = NodeOptions(redis, "a");
  o.redis = {dead.address(), redis.address()};
  Agent agent(o, &table);
  ASSERT_TRUE(agent.Start().ok());
  HungryShard shard(a);
  ASSERT_TRUE(WaitFor([&] { return table.shared() && shard.taken() > 0; }));
  EXPECT_EQ(redis.Command({"ZCARD", NodesKey("t:")}).Int(), 1);
}

TEST(AgentTest, ReloadsScriptsRedisLost) {
  RedisServer redis;
  ASSERT_TRUE(redis.Start());
  Allowances table;
  Allowance* a = table.Join(kPool);
  a->SetLimits({.message_rate = 100});
  Agent agent(NodeOptions(redis, "a"), &table);
  ASSERT_TRUE(agent.Start().ok());
  HungryShard shard(a);
  ASSERT_TRUE(WaitFor([&] { return table.shared() && shard.taken() > 0; }));

  ASSERT_EQ(redis.Command({"SCRIPT", "FLUSH"}).text, "OK");
  const std::string key = PoolKey("t:", kPool, "rate:msg");
  const std::string tat = redis.Command({"GET", key}).text;
  const uint64_t permits = agent.stats().message_permits;
  // Grants continue through Redis (the TAT moves): the scripts were loaded
  // again, and the agent never fell back.
  ASSERT_TRUE(WaitFor([&] {
    return agent.stats().message_permits > permits + 20 && redis.Command({"GET", key}).text != tat;
  }));
  EXPECT_EQ(agent.stats().fallbacks, 0u);
  EXPECT_TRUE(table.shared());
}

TEST(AgentTest, SharesABackoffOneNodeSaw) {
  RedisServer redis;
  ASSERT_TRUE(redis.Start());
  Allowances table_a, table_b;
  Allowance* a = table_a.Join(kPool);
  Allowance* b = table_b.Join(kPool);
  for (Allowance* x : {a, b}) x->SetLimits({.message_rate = 100});
  Agent agent_a(NodeOptions(redis, "a"), &table_a);
  Agent agent_b(NodeOptions(redis, "b"), &table_b);
  ASSERT_TRUE(agent_a.Start().ok());
  ASSERT_TRUE(agent_b.Start().ok());
  HungryShard shard_b(b);  // b is busy: it reads the pool's backoff each batch

  a->ReportBackoff({.level = 3,
                    .step_at = absl::Now() + absl::Seconds(60),
                    .period = absl::Seconds(60),
                    .reason = "421 4.7.0 too many connections (seen by a)"});
  ASSERT_TRUE(WaitFor([&] { return b->cluster_backoff_level() == 3; }));
  const SharedBackoff got = b->ClusterBackoff();
  // The reason as the reporting shard wrote it (it names its node): the
  // agent adds nothing, so the node is not named twice.
  EXPECT_EQ(got.reason, "421 4.7.0 too many connections (seen by a)");
  EXPECT_GT(got.step_at, absl::Now() + absl::Seconds(30));
  EXPECT_EQ(got.period, absl::Seconds(60));
  // A lower level reported does not lower the cluster's.
  b->ReportBackoff({.level = 1, .step_at = absl::Now() + absl::Seconds(60),
                    .period = absl::Seconds(60), .reason = "421"});
  ASSERT_TRUE(WaitFor([&] { return a->cluster_backoff_level() == 3; }));
  EXPECT_EQ(redis.Command({"HGET", PoolKey("t:", kPool, "backoff"), "level"}).text, "3");
}

}  // namespace
}  // namespace volley::cluster
