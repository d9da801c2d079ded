#include "cluster/allowance.h"

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace volley::cluster {
namespace {

TEST(AllowanceTest, TakesOnlyWhatTheAgentAdded) {
  Allowances table;
  Allowance* a = table.Join("mx.example.test:25|bulk");
  a->SetLimits({.message_rate = 50, .connection_rate = 5, .max_connections = 2});
  EXPECT_FALSE(a->TakeMessage());
  a->AddMessagePermits(2);
  EXPECT_TRUE(a->TakeMessage());
  EXPECT_TRUE(a->TakeMessage());
  EXPECT_FALSE(a->TakeMessage());
  EXPECT_FALSE(a->TakeConnection());
  a->AddConnectionPermits(1);
  EXPECT_TRUE(a->TakeConnection());
  EXPECT_FALSE(a->TakeConnection());

  const Demand d = a->TakeDemand();
  EXPECT_EQ(d.messages_taken, 2u);
  EXPECT_EQ(d.messages_refused, 2u);
  EXPECT_EQ(d.connections_taken, 1u);
  EXPECT_EQ(d.connections_refused, 2u);
  // Read and cleared.
  EXPECT_EQ(a->TakeDemand().messages_taken, 0u);
}

TEST(AllowanceTest, NoLimitAlwaysGives) {
  Allowances table;
  Allowance* a = table.Join("p");
  a->SetLimits({});
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(a->TakeMessage());
    EXPECT_TRUE(a->TakeConnection());
    EXPECT_TRUE(a->TryOpen());
  }
  EXPECT_EQ(a->open(), 5);
  EXPECT_FALSE(a->OverAllowed());
}

TEST(AllowanceTest, OpensStayUnderTheLeases) {
  Allowances table;
  Allowance* a = table.Join("p");
  a->SetLimits({.max_connections = 20});
  EXPECT_FALSE(a->TryOpen());  // no lease yet
  a->SetConnectionsAllowed(2);
  EXPECT_TRUE(a->TryOpen());
  EXPECT_TRUE(a->TryOpen());
  EXPECT_FALSE(a->TryOpen());
  EXPECT_EQ(a->TakeDemand().opens_refused, 2u);
  a->SetConnectionsAllowed(1);  // a lease lost
  EXPECT_TRUE(a->OverAllowed());
  a->Closed();
  EXPECT_FALSE(a->OverAllowed());
  EXPECT_EQ(a->TakeDemand().open, 1);
}

TEST(AllowanceTest, DropPermitsKeepsAtMostWhatIsSaid) {
  Allowances table;
  Allowance* a = table.Join("p");
  a->SetLimits({.message_rate = 1000, .connection_rate = 10});
  a->AddMessagePermits(100);
  a->AddConnectionPermits(3);
  a->DropPermits(10, 5);
  EXPECT_EQ(a->message_permits(), 10);
  EXPECT_EQ(a->connection_permits(), 3);
}

TEST(AllowanceTest, ShardsTogetherNeverTakeMoreThanGranted) {
  Allowances table;
  Allowance* a = table.Join("p");
  a->SetLimits({.message_rate = 1e6, .max_connections = 7});
  a->AddMessagePermits(10000);
  a->SetConnectionsAllowed(7);
  std::atomic<int> messages{0};
  std::atomic<int> opens{0};
  std::vector<std::thread> shards;
  for (int s = 0; s < 4; ++s) {
    shards.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) {
        if (a->TakeMessage()) messages.fetch_add(1);
        if (a->TryOpen()) opens.fetch_add(1);
      }
    });
  }
  for (std::thread& t : shards) t.join();
  EXPECT_EQ(messages.load(), 10000);
  EXPECT_EQ(opens.load(), 7);
  EXPECT_EQ(a->open(), 7);
}

TEST(AllowanceTest, ReportedBackoffKeepsTheHighestUntilTaken) {
  Allowances table;
  Allowance* a = table.Join("p");
  const auto level = [](int n, std::string reason = "") {
    SharedBackoff b;
    b.level = n;
    b.reason = std::move(reason);
    return b;
  };
  SharedBackoff out;
  EXPECT_FALSE(a->TakeReportedBackoff(&out));
  a->ReportBackoff(level(2, "421 slow down"));
  a->ReportBackoff(level(1));
  ASSERT_TRUE(a->TakeReportedBackoff(&out));
  EXPECT_EQ(out.level, 2);
  EXPECT_EQ(out.reason, "421 slow down");
  EXPECT_FALSE(a->TakeReportedBackoff(&out));
  a->ReportBackoff(level(0));
  ASSERT_TRUE(a->TakeReportedBackoff(&out));
  EXPECT_EQ(out.level, 0);

  EXPECT_EQ(a->cluster_backoff_level(), 0);
  a->SetClusterBackoff(level(3, "node-b: 421"));
  EXPECT_EQ(a->cluster_backoff_level(), 3);
  EXPECT_EQ(a->ClusterBackoff().reason, "node-b: 421");
}

TEST(AllowancesTest, JoinIsStableAndSnapshotListsEveryPool) {
  Allowances table;
  Allowance* a = table.Join("a");
  Allowance* b = table.Join("b");
  EXPECT_EQ(table.Join("a"), a);
  EXPECT_NE(a, b);
  EXPECT_EQ(table.Snapshot().size(), 2u);
  EXPECT_EQ(table.NextGrantAt(), absl::InfiniteFuture());
  const absl::Time t = absl::FromUnixSeconds(1800000000);
  table.SetNextGrantAt(t);
  EXPECT_EQ(table.NextGrantAt(), t);
}

}  // namespace
}  // namespace volley::cluster
