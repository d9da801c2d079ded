// fd_budget_test.cc - the connection budget: limit less reserve, the cap, the split
#include "engine/fd_budget.h"

#include <sys/resource.h>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

FdReserve SmallReserve() {
  FdReserve r;
  r.queue = 100;
  r.per_shard = 10;
  r.endpoints = 40;
  r.fixed = 30;
  return r;
}

TEST(FdBudgetTest, ReserveCountsEachShard) {
  EXPECT_EQ(SmallReserve().Total(1), 180u);
  EXPECT_EQ(SmallReserve().Total(4), 210u);
}

TEST(FdBudgetTest, DefaultReserveHoldsQueueFilesAndResolverSockets) {
  const FdReserve two_servers = DefaultFdReserve(256, 2);
  const FdReserve system = DefaultFdReserve(256, 0);
  EXPECT_GE(two_servers.queue, 256u);  // the table files and RocksDB's own
  // Without configured servers, resolv.conf's three: a UDP and a TCP socket each.
  EXPECT_EQ(system.per_shard - two_servers.per_shard, 2u);
  EXPECT_GT(two_servers.endpoints, 16u);  // the admin API's 16 and the metrics'
  EXPECT_EQ(DefaultFdReserve(1000, 2).queue - two_servers.queue, 744u);
}

TEST(FdBudgetTest, EndpointCapsShrinkUnderASmallLimit) {
  EXPECT_EQ(EndpointCap(20000, 256), 256);    // the test machine's limit: as configured
  EXPECT_EQ(EndpointCap(1024, 256), 32);
  EXPECT_EQ(EndpointCap(512, 256), 16);
  EXPECT_EQ(EndpointCap(64, 256), 8);         // never below 8
  EXPECT_EQ(EndpointCap(512, 4), 4);          // a smaller configured cap stays
  // Under ulimit -n 512 (many_domains_test) the endpoints leave room for delivery.
  EXPECT_LT(EndpointFiles(EndpointCap(512, 256), EndpointCap(512, 256)), 64u);
  EXPECT_EQ(EndpointFiles(256, 256), 652u);    // docs/config.md's example
}

TEST(FdBudgetTest, LimitLessReserveSplitEvenly) {
  absl::StatusOr<ConnectionBudget> b = PlanConnectionBudget(1000, 3, SmallReserve(), 0);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->reserved, 200u);
  EXPECT_EQ(b->total, 800u);
  EXPECT_FALSE(b->capped);
  ASSERT_EQ(b->per_shard.size(), 3u);
  EXPECT_EQ(b->per_shard[0], 267u);  // the remainder to the first shards
  EXPECT_EQ(b->per_shard[1], 267u);
  EXPECT_EQ(b->per_shard[2], 266u);
}

TEST(FdBudgetTest, MaxConnectionsCapsBelowTheLimitOnly) {
  absl::StatusOr<ConnectionBudget> capped = PlanConnectionBudget(1000, 2, SmallReserve(), 100);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->total, 100u);
  EXPECT_TRUE(capped->capped);
  EXPECT_EQ(capped->per_shard[0] + capped->per_shard[1], 100u);
  // A cap above what the limit allows changes nothing.
  absl::StatusOr<ConnectionBudget> loose = PlanConnectionBudget(1000, 2, SmallReserve(), 5000);
  ASSERT_TRUE(loose.ok());
  EXPECT_EQ(loose->total, 810u);
  EXPECT_FALSE(loose->capped);
  // Every shard keeps one connection at least.
  absl::StatusOr<ConnectionBudget> tiny = PlanConnectionBudget(1000, 4, SmallReserve(), 1);
  ASSERT_TRUE(tiny.ok());
  for (size_t n : tiny->per_shard) EXPECT_EQ(n, 1u);
}

TEST(FdBudgetTest, TooLowALimitIsRefusedWithTheNumbers) {
  // 180 reserved for one shard: 183 leaves 3, under kMinConnectionsPerShard.
  absl::StatusOr<ConnectionBudget> b = PlanConnectionBudget(183, 1, SmallReserve(), 0);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string msg(b.status().message());
  EXPECT_TRUE(absl::StrContains(msg, "is 183")) << msg;
  EXPECT_TRUE(absl::StrContains(msg, "180")) << msg;
  EXPECT_TRUE(absl::StrContains(msg, "max_open_files")) << msg;
  EXPECT_TRUE(PlanConnectionBudget(184, 1, SmallReserve(), 0).ok());
  EXPECT_FALSE(PlanConnectionBudget(100, 1, SmallReserve(), 0).ok());  // below the reserve
}

TEST(FdBudgetTest, CurrentFileLimitIsTheSoftLimit) {
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  rlimit lower = rl;
  lower.rlim_cur = 300;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lower), 0);
  EXPECT_EQ(CurrentFileLimit(), 300u);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

}  // namespace
}  // namespace volley::engine
