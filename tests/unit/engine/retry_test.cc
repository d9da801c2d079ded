#include "engine/retry.h"

#include "gtest/gtest.h"

namespace volley::engine {
namespace {

TEST(RetryDelay, DoublesFromInitialUpToMax) {
  RetryConfig r;  // 5m initial, 4h max
  struct Case {
    uint32_t attempts;
    absl::Duration want;
  };
  const Case cases[] = {
      {1, absl::Minutes(5)},  {2, absl::Minutes(10)}, {3, absl::Minutes(20)},
      {4, absl::Minutes(40)}, {6, absl::Minutes(160)}, {7, absl::Hours(4)},
      {50, absl::Hours(4)},   {UINT32_MAX, absl::Hours(4)},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(RetryDelay(r, c.attempts, 1.0), c.want) << "attempts " << c.attempts;
  }
}

TEST(RetryDelay, JitterScalesAndIsClamped) {
  RetryConfig r;
  EXPECT_EQ(RetryDelay(r, 1, kMinJitter), absl::Minutes(4));
  EXPECT_EQ(RetryDelay(r, 1, kMaxJitter), absl::Minutes(6));
  EXPECT_EQ(RetryDelay(r, 1, 0.0), absl::Minutes(4));   // a bad draw cannot make it 0
  EXPECT_EQ(RetryDelay(r, 7, 5.0), absl::Hours(4) * kMaxJitter);
}

TEST(NextAttemptAt, NeverPastTheDeadline) {
  RetryConfig r;
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  EXPECT_EQ(NextAttemptAt(r, 1, 1.0, now, now + absl::Hours(1)), now + absl::Minutes(5));
  EXPECT_EQ(NextAttemptAt(r, 1, 1.0, now, now + absl::Minutes(2)), now + absl::Minutes(2));
  // Already past the deadline: try now (and the recipient then expires).
  EXPECT_EQ(NextAttemptAt(r, 3, 1.0, now, now - absl::Hours(1)), now);
}

}  // namespace
}  // namespace volley::engine
