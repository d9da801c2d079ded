#include "engine/ready_queue.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(ReadyQueue, GroupsTakeTurnsUpToTheirLimit) {
  ReadyQueue<int> q;
  for (int i = 0; i < 5; ++i) q.Push("big/a.test", 2, i);
  q.Push("small", 1, 100);
  q.Push("small", 1, 101);
  EXPECT_EQ(q.size(), 7u);
  EXPECT_THAT(q.Take(), ElementsAre(0, 1));
  EXPECT_THAT(q.Take(), ElementsAre(100));  // the other group's turn
  EXPECT_THAT(q.Take(), ElementsAre(2, 3));
  EXPECT_THAT(q.Take(), ElementsAre(101));
  EXPECT_THAT(q.Take(), ElementsAre(4));
  EXPECT_TRUE(q.empty());
  EXPECT_THAT(q.Take(), IsEmpty());
}

TEST(ReadyQueue, PushFrontGoesFirstInItsGroupAndTheGroupGoesFirst) {
  ReadyQueue<int> q;
  q.Push("x", 3, 1);
  q.Push("y", 3, 2);
  q.PushFront("z", 3, 9);   // a new group pushed to the front takes the next turn
  EXPECT_THAT(q.Take(), ElementsAre(9));
  q.PushFront("y", 3, 8);   // an existing group keeps its place in line
  EXPECT_THAT(q.Take(), ElementsAre(1));
  EXPECT_THAT(q.Take(), ElementsAre(8, 2));
}

TEST(ReadyQueue, PeekShowsWhatTakeGivesFirst) {
  ReadyQueue<int> q;
  EXPECT_EQ(q.Peek(), nullptr);
  q.Push("x", 2, 1);
  q.Push("x", 2, 2);
  q.Push("y", 1, 3, /*priority=*/5);  // a higher priority goes first
  for (int want : {3, 1}) {
    ASSERT_NE(q.Peek(), nullptr);
    EXPECT_EQ(*q.Peek(), want);
    EXPECT_EQ(q.Take().front(), want);
  }
  EXPECT_EQ(q.Peek(), nullptr);
}

TEST(ReadyQueue, TakeAllEmptiesEverything) {
  ReadyQueue<std::string> q;
  q.Push("a", 5, "1");
  q.Push("b", 5, "2");
  q.Push("a", 5, "3");
  EXPECT_THAT(q.TakeAll(), ElementsAre("1", "3", "2"));
  EXPECT_TRUE(q.empty());
  q.Push("a", 0, "4");  // a zero limit still lets one through
  EXPECT_THAT(q.Take(), ElementsAre("4"));
}

TEST(ReadyQueue, HigherPriorityGroupsGoFirstEqualOnesTakeTurns) {
  ReadyQueue<int> q;
  q.Push("low", 1, 1, /*priority=*/2);
  q.Push("low", 1, 2, 2);
  q.Push("high-a", 1, 10, 9);
  q.Push("high-b", 1, 20, 9);
  q.Push("high-a", 1, 11, 9);
  q.Push("mid", 1, 5, 5);
  EXPECT_THAT(q.Take(), ElementsAre(10));
  EXPECT_THAT(q.Take(), ElementsAre(20));  // equal priorities alternate
  EXPECT_THAT(q.Take(), ElementsAre(11));
  EXPECT_THAT(q.Take(), ElementsAre(5));
  q.PushFront("high-c", 1, 30, 9);  // a higher priority arriving later still goes first
  EXPECT_THAT(q.Take(), ElementsAre(30));
  EXPECT_THAT(q.Take(), ElementsAre(1));
  EXPECT_THAT(q.TakeAll(), ElementsAre(2));
  EXPECT_TRUE(q.empty());
}

TEST(ReadyQueue, CountsTheTransactionsLeft) {
  ReadyQueue<int> q;
  for (int i = 0; i < 5; ++i) q.Push("shared/a.test", 2, i);  // 2 + 2 + 1
  EXPECT_EQ(q.transactions(), 3u);
  q.Push("personal", 1, 100);
  q.Push("personal", 1, 101);
  EXPECT_EQ(q.transactions(), 5u);
  q.PushFront("shared/a.test", 2, 9);  // 6 recipients now: still 3 transactions
  EXPECT_EQ(q.transactions(), 3u + 2u);
  q.Take();  // shared: 4 left, 2 transactions
  EXPECT_EQ(q.transactions(), 4u);
  q.Take();  // personal: 1 left
  EXPECT_EQ(q.transactions(), 3u);
  q.TakeAll();
  EXPECT_EQ(q.transactions(), 0u);
  q.Push("shared/a.test", 100, 1);
  EXPECT_EQ(q.transactions(), 1u);
  q.Take();
  EXPECT_EQ(q.transactions(), 0u);
}

}  // namespace
}  // namespace volley::engine
