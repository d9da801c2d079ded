#include "engine/message_bytes.h"

#include <cstdint>
#include <optional>

#include "gtest/gtest.h"

namespace volley::engine {
namespace {

TEST(MessageBytes, MessagesStartWhileTheyFitWithinTheBound) {
  MessageBytes<int> bytes(1000);
  EXPECT_TRUE(bytes.MayStart(1, 400));
  bytes.Take(1, 400);
  bytes.Take(2, 600);
  EXPECT_EQ(bytes.held(), 1000u);
  EXPECT_FALSE(bytes.Fits(1));  // 1001 > 1000
  EXPECT_FALSE(bytes.MayStart(3, 1));
  bytes.Give(400);
  EXPECT_TRUE(bytes.Fits(400));
  EXPECT_FALSE(bytes.Fits(401));
  EXPECT_EQ(bytes.peak(), 1000u);
}

TEST(MessageBytes, AMessageLargerThanTheBoundGoesAlone) {
  MessageBytes<int> bytes(1000);
  bytes.Take(1, 10);
  EXPECT_FALSE(bytes.Fits(5000));  // not beside another message
  bytes.Give(10);
  EXPECT_TRUE(bytes.Fits(5000));   // nothing held: it goes alone
  bytes.Take(1, 5000);
  EXPECT_FALSE(bytes.Fits(1));     // and nothing goes beside it
  bytes.Give(5000);
  EXPECT_EQ(bytes.held(), 0u);
  EXPECT_EQ(bytes.peak(), 5000u);
}

TEST(MessageBytes, NoBoundLetsEverythingStart) {
  MessageBytes<int> bytes(0);
  bytes.Take(1, uint64_t{1} << 40);
  EXPECT_TRUE(bytes.MayStart(2, uint64_t{1} << 40));
  EXPECT_TRUE(bytes.Fits(uint64_t{1} << 40));
}

TEST(MessageBytes, WaitersGoFirstComeFirstServedAndNobodyPassesTheHead) {
  MessageBytes<int> bytes(1000);
  bytes.Take(9, 900);
  // 1 wants 500 (waits), 2 wants 50: 50 would fit, but 1 is ahead.
  EXPECT_FALSE(bytes.MayStart(1, 500));
  EXPECT_TRUE(bytes.Wait(1));
  EXPECT_FALSE(bytes.Wait(1));  // once in line
  EXPECT_TRUE(bytes.Fits(50));
  EXPECT_FALSE(bytes.MayStart(2, 50));
  EXPECT_TRUE(bytes.Wait(2));
  EXPECT_EQ(bytes.Head(), std::optional<int>(1));
  bytes.Give(900);
  EXPECT_FALSE(bytes.MayStart(2, 50));  // still 1's turn
  EXPECT_TRUE(bytes.MayStart(1, 500));
  bytes.Take(1, 500);                   // 1's turn is used: 2 is next
  EXPECT_FALSE(bytes.waiting(1));
  EXPECT_EQ(bytes.Head(), std::optional<int>(2));
  EXPECT_TRUE(bytes.MayStart(2, 50));
  EXPECT_FALSE(bytes.MayStart(1, 10));  // 1 wants more: behind 2 now
  EXPECT_TRUE(bytes.Wait(1));
  bytes.Take(2, 50);
  EXPECT_EQ(bytes.Head(), std::optional<int>(1));
  EXPECT_EQ(bytes.line_length(), 1u);
}

TEST(MessageBytes, AHeadWithNothingToStartLeavesTheLine) {
  MessageBytes<int> bytes(100);
  bytes.Take(9, 100);
  bytes.Wait(1);
  bytes.Wait(2);
  bytes.Wait(3);
  bytes.LeaveHead();
  EXPECT_EQ(bytes.Head(), std::optional<int>(2));
  bytes.Forget(3);
  bytes.Forget(7);  // not waiting: nothing happens
  EXPECT_EQ(bytes.line_length(), 1u);
  EXPECT_FALSE(bytes.waiting(1));
  EXPECT_TRUE(bytes.Wait(1));  // it may join again, at the end
  EXPECT_EQ(bytes.Head(), std::optional<int>(2));
}

}  // namespace
}  // namespace volley::engine
