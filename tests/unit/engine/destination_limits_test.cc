// Destination limits with a manual clock: connections, buckets, backoff,
// suspension, sharing, hosts and sources, and what a 452 means.
#include "engine/destination_limits.h"

#include <sys/socket.h>

#include <map>
#include <memory>
#include <random>
#include <string>

#include "absl/time/time.h"
#include "engine/outcomes.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

smtp::Outcome Reply(int code, std::string enhanced, std::string text,
                    smtp::Stage stage = smtp::Stage::kRcpt) {
  smtp::Outcome o;
  o.kind = code >= 500 ? smtp::Outcome::Kind::kPermanent
           : code >= 400 ? smtp::Outcome::Kind::kTransient
                         : smtp::Outcome::Kind::kAccepted;
  o.code = code;
  o.enhanced = std::move(enhanced);
  o.text = std::move(text);
  o.stage = stage;
  return o;
}

BackoffRule Rule(BackoffAction action, absl::Duration period) {
  BackoffRule r;
  r.klass = "rate_limited";
  r.action = action;
  r.period = period;
  return r;
}

// Hosts "mx.a" and "mx.b" at preference 10 (one address each), "mx.c" at 20.
std::shared_ptr<const dns::Route> ThreeHosts() {
  auto route = std::make_shared<dns::Route>(*dns::ParseRoute("127.0.0.1:25,127.0.0.2:25,127.0.0.3:25"));
  route->name = "site.test";
  const char* mx[] = {"mx.a", "mx.b", "mx.c"};
  const uint16_t pref[] = {10, 10, 20};
  for (size_t i = 0; i < 3; ++i) {
    route->hosts[i].mx = mx[i];
    route->hosts[i].preference = pref[i];
  }
  return route;
}

class DestinationLimitsTest : public ::testing::Test {
 protected:
  DestinationLimits Make(int sharing = 1) {
    DestinationLimits l(&policy_, "site.test|", sharing);
    l.SetRoute(ThreeHosts());
    return l;
  }
  DestinationPolicy policy_;
};

TEST_F(DestinationLimitsTest, ConnectionsOpenOnlyForWorkNobodyIsAboutToTake) {
  policy_.max_connections = 3;
  policy_.max_connections_opening = 2;
  policy_.max_transactions_in_flight = 1;
  const DestinationLimits l = Make();
  EXPECT_FALSE(l.MayOpen(0, 0, 0, kT0));
  EXPECT_TRUE(l.MayOpen(1, 0, 0, kT0));
  // kWaitingPerConnection transactions per connection are taken by it.
  EXPECT_EQ(l.WaitingPerConnection(), kWaitingPerConnection);
  EXPECT_FALSE(l.MayOpen(kWaitingPerConnection, 1, 0, kT0));
  EXPECT_TRUE(l.MayOpen(kWaitingPerConnection + 1, 1, 0, kT0));
  EXPECT_FALSE(l.MayOpen(2 * kWaitingPerConnection, 2, 0, kT0));
  EXPECT_TRUE(l.MayOpen(2 * kWaitingPerConnection + 1, 2, 0, kT0));
  EXPECT_FALSE(l.MayOpen(100, 2, 2, kT0));  // two still starting
  EXPECT_FALSE(l.MayOpen(100, 3, 0, kT0));  // at max_connections
}

TEST_F(DestinationLimitsTest, AConnectionWithTransactionsInFlightTakesMoreBeforeAnotherOpens) {
  policy_.max_connections = 3;
  policy_.max_transactions_in_flight = 4;
  DestinationLimits l = Make();
  // Each session there is takes four transactions a round trip.
  EXPECT_EQ(l.WaitingPerConnection(), 4 * kWaitingPerConnection);
  EXPECT_TRUE(l.MayOpen(1, 0, 0, kT0));
  EXPECT_FALSE(l.MayOpen(kWaitingPerConnection + 1, 1, 0, kT0));
  EXPECT_FALSE(l.MayOpen(4 * kWaitingPerConnection, 1, 0, kT0));
  EXPECT_TRUE(l.MayOpen(4 * kWaitingPerConnection + 1, 1, 0, kT0));
  // A reload's bound applies to the next decision.
  DestinationPolicy one = policy_;
  one.max_transactions_in_flight = 1;
  l.SetPolicy(&one);
  EXPECT_TRUE(l.MayOpen(kWaitingPerConnection + 1, 1, 0, kT0));
}

TEST_F(DestinationLimitsTest, ASessionWithoutChunkingOpensConnectionsAsAtOneInFlight) {
  policy_.max_connections = 3;
  policy_.max_transactions_in_flight = 4;
  DestinationLimits l = Make();
  // The server's session takes one at a time (no PIPELINING or no CHUNKING).
  l.SetSessionDepth(1);
  EXPECT_EQ(l.WaitingPerConnection(), kWaitingPerConnection);
  EXPECT_TRUE(l.MayOpen(kWaitingPerConnection + 1, 1, 0, kT0));
  // A later session takes four.
  l.SetSessionDepth(4);
  EXPECT_FALSE(l.MayOpen(kWaitingPerConnection + 1, 1, 0, kT0));
  EXPECT_TRUE(l.MayOpen(4 * kWaitingPerConnection + 1, 1, 0, kT0));
}

TEST_F(DestinationLimitsTest, AConnectionKeepsGoingUntilItsMessageLimit) {
  policy_.max_messages_per_connection = 2;
  const DestinationLimits l = Make();
  EXPECT_TRUE(l.KeepsConnection(1, 1, kT0));
  EXPECT_FALSE(l.KeepsConnection(2, 1, kT0));
}

TEST_F(DestinationLimitsTest, MessageRateIsATokenBucketOnTheCallersClock) {
  policy_.max_message_rate = *ParseRate("10/s");
  DestinationLimits l = Make();
  EXPECT_TRUE(l.TakeMessageToken(kT0));
  EXPECT_FALSE(l.TakeMessageToken(kT0));
  EXPECT_EQ(l.NextMessageTokenAt(kT0), kT0 + absl::Milliseconds(100));
  EXPECT_FALSE(l.TakeMessageToken(kT0 + absl::Milliseconds(99)));
  EXPECT_TRUE(l.TakeMessageToken(kT0 + absl::Milliseconds(100)));
}

TEST_F(DestinationLimitsTest, SharingASiteSplitsItsLimits) {
  policy_.max_connections = 20;
  policy_.max_message_rate = *ParseRate("100/s");
  DestinationLimits l = Make();
  l.SetSharing(4);
  EXPECT_EQ(l.MaxConnections(), 5);
  EXPECT_DOUBLE_EQ(l.MessageRate(), 25);
  l.SetSharing(40);
  EXPECT_EQ(l.MaxConnections(), 1);  // never none
  l.SetSharing(1);
  EXPECT_EQ(l.MaxConnections(), 20);
}

TEST_F(DestinationLimitsTest, BackoffHalvesOncePerBurstAndEasesPerQuietPeriod) {
  policy_.max_connections = 20;
  policy_.max_message_rate = *ParseRate("80/s");
  DestinationLimits l = Make();
  const BackoffRule rule = Rule(BackoffAction::kBackoff, absl::Minutes(5));
  const smtp::Outcome slow_down = Reply(421, "4.7.0", "try again later");
  EXPECT_EQ(l.OnReply(rule, slow_down, kT0), DestinationLimits::ReplyEffect::kBackoffRaised);
  EXPECT_EQ(l.backoff_level(), 1);
  EXPECT_EQ(l.MaxConnections(), 10);
  EXPECT_DOUBLE_EQ(l.MessageRate(), 40);
  EXPECT_EQ(l.backoff_reason(), "421 4.7.0 try again later");
  // The same burst on parallel connections: one step only.
  EXPECT_EQ(l.OnReply(rule, slow_down, kT0 + absl::Seconds(29)),
            DestinationLimits::ReplyEffect::kNone);
  EXPECT_EQ(l.backoff_level(), 1);
  // A tenth of the period later it is a new burst.
  const absl::Time t1 = kT0 + absl::Seconds(30);
  EXPECT_EQ(l.OnReply(rule, slow_down, t1), DestinationLimits::ReplyEffect::kBackoffRaised);
  EXPECT_EQ(l.backoff_level(), 2);
  EXPECT_EQ(l.MaxConnections(), 5);
  EXPECT_DOUBLE_EQ(l.MessageRate(), 20);
  // Eased one level per period without another such reply.
  l.StepDownIfDue(t1 + absl::Minutes(5) - absl::Seconds(1));
  EXPECT_EQ(l.backoff_level(), 2);
  l.StepDownIfDue(t1 + absl::Minutes(5));
  EXPECT_EQ(l.backoff_level(), 1);
  l.StepDownIfDue(t1 + absl::Minutes(10));
  EXPECT_EQ(l.backoff_level(), 0);
  EXPECT_EQ(l.MaxConnections(), 20);
  EXPECT_DOUBLE_EQ(l.MessageRate(), 80);
}

TEST_F(DestinationLimitsTest, BackoffStopsAtASixteenth) {
  policy_.max_connections = 32;
  DestinationLimits l = Make();
  const BackoffRule rule = Rule(BackoffAction::kBackoff, absl::Minutes(1));
  absl::Time t = kT0;
  for (int i = 0; i < 10; ++i, t += absl::Minutes(1) / 10) {
    l.OnReply(rule, Reply(421, "4.7.0", "slow down"), t);
  }
  EXPECT_EQ(l.backoff_level(), kMaxBackoffLevel);
  EXPECT_EQ(l.MaxConnections(), 2);
}

TEST_F(DestinationLimitsTest, BackoffWithoutAConfiguredRateHalvesTheMeasuredOne) {
  DestinationLimits l = Make();
  // 50 transactions a second for three seconds: the meter has a measure.
  absl::Time t = kT0;
  for (int i = 0; i < 150; ++i, t += absl::Milliseconds(20)) ASSERT_TRUE(l.TakeMessageToken(t));
  EXPECT_EQ(l.MessageRate(), 0);  // unlimited before any backoff
  l.OnReply(Rule(BackoffAction::kBackoff, absl::Minutes(5)), Reply(421, "4.7.0", "later"), t);
  EXPECT_NEAR(l.MessageRate(), 25, 3);
  // Now limited: a burst at once gets one token, not 150.
  int taken = 0;
  for (int i = 0; i < 150; ++i) taken += l.TakeMessageToken(t) ? 1 : 0;
  EXPECT_LE(taken, 3);
}

TEST_F(DestinationLimitsTest, BackoffBeforeAnyMeasureGetsItsLimitOnceMeasured) {
  DestinationLimits l = Make();
  l.OnReply(Rule(BackoffAction::kBackoff, absl::Minutes(5)), Reply(421, "4.7.0", "later"), kT0);
  EXPECT_EQ(l.MessageRate(), 0);  // nothing measured yet: no limit to halve
  EXPECT_FALSE(l.MeasureBase());
  absl::Time t = kT0;
  for (int i = 0; i < 150; ++i, t += absl::Milliseconds(20)) l.TakeMessageToken(t);
  EXPECT_TRUE(l.MeasureBase());
  EXPECT_GT(l.MessageRate(), 0);
  EXPECT_FALSE(l.MeasureBase());  // once
}

TEST_F(DestinationLimitsTest, SuspensionHoldsEverythingUntilItEnds) {
  DestinationLimits l = Make();
  const BackoffRule rule = Rule(BackoffAction::kSuspend, absl::Hours(1));
  EXPECT_EQ(l.OnReply(rule, Reply(554, "5.7.1", "blocked"), kT0),
            DestinationLimits::ReplyEffect::kSuspended);
  EXPECT_TRUE(l.suspended(kT0 + absl::Minutes(59)));
  EXPECT_FALSE(l.MayOpen(100, 0, 0, kT0 + absl::Minutes(1)));
  EXPECT_FALSE(l.KeepsConnection(0, 1, kT0 + absl::Minutes(1)));
  // Another such reply while suspended extends it, not counted as a new one.
  EXPECT_EQ(l.OnReply(rule, Reply(554, "5.7.1", "blocked"), kT0 + absl::Minutes(30)),
            DestinationLimits::ReplyEffect::kNone);
  EXPECT_EQ(l.suspended_until(), kT0 + absl::Minutes(90));
  EXPECT_FALSE(l.suspended(kT0 + absl::Minutes(90)));
  EXPECT_TRUE(l.MayOpen(100, 0, 0, kT0 + absl::Minutes(90)));
}

TEST_F(DestinationLimitsTest, ABounceRuleBouncesAndChangesNothingElse) {
  DestinationLimits l = Make();
  EXPECT_EQ(l.OnReply(Rule(BackoffAction::kBounce, absl::Minutes(5)),
                      Reply(450, "4.2.2", "mailbox full"), kT0),
            DestinationLimits::ReplyEffect::kBounce);
  EXPECT_EQ(l.backoff_level(), 0);
  EXPECT_FALSE(l.suspended(kT0));
}

TEST_F(DestinationLimitsTest, HostsOfTheBestPreferenceShareTheLoad) {
  DestinationLimits l = Make();
  std::mt19937_64 rng(7);
  std::map<size_t, int> picks;
  for (int i = 0; i < 200; ++i) ++picks[l.ChooseHost(kT0, rng)];
  EXPECT_GT(picks[0], 50);
  EXPECT_GT(picks[1], 50);
  EXPECT_EQ(picks[2], 0);  // preference 20 only when both 10s are down
}

TEST_F(DestinationLimitsTest, AHostDownIsPassedOverForAWhile) {
  DestinationLimits l = Make();
  std::mt19937_64 rng(7);
  l.MarkHostDown("127.0.0.1:25", kT0);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(l.ChooseHost(kT0, rng), 1u);
  l.MarkHostDown("127.0.0.2:25", kT0 + absl::Seconds(1));
  EXPECT_EQ(l.ChooseHost(kT0 + absl::Seconds(1), rng), 2u);
  EXPECT_TRUE(l.AnyHostUp(kT0 + absl::Seconds(1)));
  l.MarkHostDown("127.0.0.3:25", kT0 + absl::Seconds(2));
  EXPECT_FALSE(l.AnyHostUp(kT0 + absl::Seconds(2)));
  // All down: the one whose mark ends first.
  EXPECT_EQ(l.ChooseHost(kT0 + absl::Seconds(2), rng), 0u);
  EXPECT_TRUE(l.AnyHostUp(kT0 + kHostDownTime));
  EXPECT_EQ(l.ChooseHost(kT0 + kHostDownTime, rng), 0u);
}

// Settled: what a destination let go idle (Shard::TendDestinations) would lose.
TEST_F(DestinationLimitsTest, SettledOnlyWhenNoBackoffSuspensionFallbackOrDownHostRuns) {
  DestinationLimits fresh = Make();
  EXPECT_TRUE(fresh.Settled(kT0));

  DestinationLimits backed_off = Make();
  backed_off.OnReply(Rule(BackoffAction::kBackoff, absl::Minutes(5)),
                     Reply(421, "4.7.0", "try again later"), kT0);
  EXPECT_FALSE(backed_off.Settled(kT0 + absl::Minutes(4)));
  backed_off.StepDownIfDue(kT0 + absl::Minutes(5));
  EXPECT_TRUE(backed_off.Settled(kT0 + absl::Minutes(5)));

  DestinationLimits suspended = Make();
  suspended.OnReply(Rule(BackoffAction::kSuspend, absl::Hours(1)),
                    Reply(554, "5.7.1", "blocked"), kT0);
  EXPECT_FALSE(suspended.Settled(kT0 + absl::Minutes(59)));
  EXPECT_TRUE(suspended.Settled(kT0 + absl::Hours(1)));

  DestinationLimits plaintext = Make();
  plaintext.FallBackToPlaintext(kT0 + absl::Hours(1));
  EXPECT_FALSE(plaintext.Settled(kT0 + absl::Minutes(59)));
  EXPECT_TRUE(plaintext.Settled(kT0 + absl::Hours(1)));

  DestinationLimits host_down = Make();
  host_down.MarkHostDown("127.0.0.3:25", kT0);
  EXPECT_FALSE(host_down.Settled(kT0 + kHostDownTime - absl::Seconds(1)));
  EXPECT_TRUE(host_down.Settled(kT0 + kHostDownTime));
}

TEST_F(DestinationLimitsTest, ANewRouteKeepsDownMarksByAddress) {
  DestinationLimits l = Make();
  l.MarkHostDown("127.0.0.2:25", kT0);
  auto fresher = std::make_shared<dns::Route>(*dns::ParseRoute("127.0.0.2:25,127.0.0.9:25"));
  fresher->hosts[1].preference = 1;
  l.SetRoute(fresher);
  std::mt19937_64 rng(1);
  EXPECT_EQ(l.ChooseHost(kT0, rng), 1u);  // 127.0.0.2 is still down
}

TEST_F(DestinationLimitsTest, SourcesAreTakenInProportionToTheirWeights) {
  policy_.sources = {0, 1, 2};
  DestinationLimits l = Make();
  const std::vector<SourceChoice> sources = {{AF_INET, 3}, {AF_INET, 1}, {AF_INET6, 5}};
  std::map<int, int> picks;
  for (int i = 0; i < 40; ++i) ++picks[l.PickSource(AF_INET, sources)];
  EXPECT_EQ(picks[0], 30);
  EXPECT_EQ(picks[1], 10);
  EXPECT_EQ(picks.count(2), 0u);  // another family
  EXPECT_EQ(l.PickSource(AF_INET6, sources), 2);
  policy_.sources = {2};
  DestinationLimits v6_only = Make();
  EXPECT_EQ(v6_only.PickSource(AF_INET, sources), -2);
  policy_.sources.clear();
  DestinationLimits any = Make();
  EXPECT_EQ(any.PickSource(AF_INET, sources), -1);
}

// ---- cluster-scoped pools: an Allowance filled by hand stands for the agent.

class ClusterLimitsTest : public DestinationLimitsTest {
 protected:
  // A pool of a site shared by four shards, attached to the node's table.
  DestinationLimits MakeClustered() {
    DestinationLimits l = Make(/*sharing=*/4);
    l.SetCluster(allowance_, &table_, "node-a");
    return l;
  }
  cluster::Allowances table_;
  cluster::Allowance* allowance_ = table_.Join("site.test|");
};

TEST_F(ClusterLimitsTest, TheEntryGetsThePoliciesWholeLimitsNotAShardsShare) {
  policy_.max_connections = 20;
  policy_.max_message_rate = *ParseRate("100/s");
  policy_.max_connection_rate = *ParseRate("5/s");
  DestinationLimits l = MakeClustered();
  const cluster::PoolLimits set = allowance_->limits();
  EXPECT_DOUBLE_EQ(set.message_rate, 100);  // not 100 / 4 shards
  EXPECT_DOUBLE_EQ(set.connection_rate, 5);
  EXPECT_EQ(set.max_connections, 20);
  EXPECT_EQ(l.MaxConnections(), 20);
  // Detached (a reload made the scope "node"): the shard's share again.
  l.SetCluster(nullptr, nullptr, "");
  EXPECT_EQ(l.MaxConnections(), 5);
  EXPECT_DOUBLE_EQ(l.MessageRate(), 25);
}

TEST_F(ClusterLimitsTest, MessagesTakeThePermitsTheAgentGranted) {
  policy_.max_message_rate = *ParseRate("10/s");
  DestinationLimits l = MakeClustered();
  // Before any grant: nothing, however long the pool's own bucket has had.
  EXPECT_FALSE(l.TakeMessageToken(kT0 + absl::Hours(1)));
  allowance_->AddMessagePermits(3);
  // Three permits are three transactions at once: the pool's bucket (one
  // token, then 10/s) no longer applies.
  EXPECT_TRUE(l.TakeMessageToken(kT0));
  EXPECT_TRUE(l.TakeMessageToken(kT0));
  EXPECT_TRUE(l.TakeMessageToken(kT0));
  EXPECT_FALSE(l.TakeMessageToken(kT0));
  EXPECT_EQ(allowance_->message_permits(), 0);
  const cluster::Demand d = allowance_->TakeDemand();
  EXPECT_EQ(d.messages_taken, 3u);
  EXPECT_EQ(d.messages_refused, 2u);
}

TEST_F(ClusterLimitsTest, ARefusedPoolWaitsForTheNextGrantNotABusyLoop) {
  policy_.max_message_rate = *ParseRate("10/s");
  DestinationLimits l = MakeClustered();
  table_.SetNextGrantAt(kT0 + absl::Milliseconds(70));
  EXPECT_EQ(l.NextMessageTokenAt(kT0), kT0 + absl::Milliseconds(70));
  EXPECT_EQ(l.NextConnectionTokenAt(kT0), kT0 + absl::Milliseconds(70));
  // The agent is late: looked at again soon, not now.
  EXPECT_EQ(l.NextMessageTokenAt(kT0 + absl::Seconds(1)), kT0 + absl::Seconds(1) + kGrantRetry);
}

TEST_F(ClusterLimitsTest, ConnectionsTakeConnectionPermits) {
  policy_.max_connection_rate = *ParseRate("5/s");
  DestinationLimits l = MakeClustered();
  EXPECT_FALSE(l.TakeConnectionToken(kT0));
  allowance_->AddConnectionPermits(2);
  EXPECT_TRUE(l.TakeConnectionToken(kT0));
  EXPECT_TRUE(l.TakeConnectionToken(kT0));
  EXPECT_FALSE(l.TakeConnectionToken(kT0 + absl::Hours(1)));
}

TEST_F(ClusterLimitsTest, ConnectionPlacesAreTheNodesAndCloseWhenOverAllowed) {
  policy_.max_connections = 10;
  policy_.max_messages_per_connection = 100;
  DestinationLimits l = MakeClustered();
  allowance_->SetConnectionsAllowed(2);  // this node's part of the 10
  // The shard's side of a connection: a place before it opens, given back
  // when it closes.
  ASSERT_TRUE(allowance_->TryOpen());
  ASSERT_TRUE(allowance_->TryOpen());
  EXPECT_FALSE(allowance_->TryOpen());
  EXPECT_TRUE(l.KeepsConnection(1, 2, kT0));
  // Another node took its part: the node holds more than it may now.
  allowance_->SetConnectionsAllowed(1);
  EXPECT_FALSE(l.KeepsConnection(1, 2, kT0));
  allowance_->Closed();
  EXPECT_TRUE(l.KeepsConnection(1, 1, kT0));
  allowance_->Closed();
  EXPECT_EQ(allowance_->open(), 0);
}

TEST_F(ClusterLimitsTest, AnOwnBackoffHalvesTheEntryAndIsReportedWithTheNode) {
  policy_.max_connections = 20;
  policy_.max_message_rate = *ParseRate("80/s");
  DestinationLimits l = MakeClustered();
  const BackoffRule rule = Rule(BackoffAction::kBackoff, absl::Minutes(5));
  ASSERT_EQ(l.OnReply(rule, Reply(421, "4.7.0", "slow down"), kT0),
            DestinationLimits::ReplyEffect::kBackoffRaised);
  EXPECT_DOUBLE_EQ(allowance_->limits().message_rate, 40);
  EXPECT_EQ(allowance_->limits().max_connections, 10);
  cluster::SharedBackoff reported;
  ASSERT_TRUE(allowance_->TakeReportedBackoff(&reported));
  EXPECT_EQ(reported.level, 1);
  EXPECT_EQ(reported.step_at, kT0 + absl::Minutes(5));
  EXPECT_EQ(reported.period, absl::Minutes(5));
  EXPECT_EQ(reported.reason, "421 4.7.0 slow down (seen by node-a)");
  // Easing is reported too, and the entry's limits come back.
  l.StepDownIfDue(kT0 + absl::Minutes(5));
  ASSERT_TRUE(allowance_->TakeReportedBackoff(&reported));
  EXPECT_EQ(reported.level, 0);
  EXPECT_DOUBLE_EQ(allowance_->limits().message_rate, 80);
}

TEST_F(ClusterLimitsTest, AHigherLevelFromTheClusterIsTakenWhileInForce) {
  policy_.max_connections = 20;
  policy_.max_message_rate = *ParseRate("80/s");
  DestinationLimits l = MakeClustered();
  EXPECT_FALSE(l.AdoptClusterBackoff(kT0));  // nothing agreed yet
  allowance_->SetClusterBackoff(cluster::SharedBackoff{
      2, kT0 + absl::Minutes(3), absl::Minutes(5), "421 4.7.0 slow down (seen by node-b)"});
  EXPECT_TRUE(l.AdoptClusterBackoff(kT0));
  EXPECT_EQ(l.backoff_level(), 2);
  EXPECT_EQ(l.backoff_reason(), "421 4.7.0 slow down (seen by node-b)");
  EXPECT_DOUBLE_EQ(allowance_->limits().message_rate, 20);
  EXPECT_EQ(l.MaxConnections(), 5);
  EXPECT_FALSE(l.AdoptClusterBackoff(kT0 + absl::Seconds(1)));  // once
  // Taken from the cluster, not reported back as this node's own.
  cluster::SharedBackoff reported;
  EXPECT_FALSE(allowance_->TakeReportedBackoff(&reported));
  // It eases on the cluster's schedule, and a level whose step up is past is
  // not taken again.
  l.StepDownIfDue(kT0 + absl::Minutes(3));
  EXPECT_EQ(l.backoff_level(), 1);
  EXPECT_FALSE(l.AdoptClusterBackoff(kT0 + absl::Minutes(3)));
  EXPECT_EQ(l.backoff_level(), 1);
}

TEST_F(ClusterLimitsTest, ANodeScopedPoolKeepsItsOwnBuckets) {
  // No SetCluster: what the shards do for scope = "node" or without [cluster].
  policy_.max_message_rate = *ParseRate("10/s");
  DestinationLimits l = Make();
  EXPECT_TRUE(l.TakeMessageToken(kT0));
  EXPECT_FALSE(l.TakeMessageToken(kT0));
  EXPECT_EQ(allowance_->TakeDemand().messages_taken, 0u);
}

TEST(FateOf, A452ToRcptGoesInTheNextTransactionOnlyWhenOthersGotThrough) {
  const smtp::Outcome too_many = Reply(452, "4.5.3", "too many recipients");
  EXPECT_EQ(FateOf(too_many, /*any_accepted=*/true), RcptFate::kNextTransaction);
  EXPECT_EQ(FateOf(too_many, /*any_accepted=*/false), RcptFate::kDeferred);
  EXPECT_EQ(FateOf(Reply(452, "4.3.1", "no room", smtp::Stage::kMail), true), RcptFate::kDeferred);
  EXPECT_EQ(FateOf(Reply(451, "4.3.0", "later"), true), RcptFate::kDeferred);
  EXPECT_EQ(FateOf(Reply(550, "5.1.1", "no such user"), true), RcptFate::kBounced);
  EXPECT_EQ(FateOf(Reply(250, "2.0.0", "ok"), true), RcptFate::kDelivered);
}

}  // namespace
}  // namespace volley::engine
