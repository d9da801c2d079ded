// shaping_test.cc - rates and token buckets (engine/shaping.h)
#include "engine/shaping.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

using ::testing::HasSubstr;

TEST(ParseRate, UnitsAndNoLimit) {
  EXPECT_DOUBLE_EQ(ParseRate("3000/min")->per_second, 50);
  EXPECT_DOUBLE_EQ(ParseRate("10/s")->per_second, 10);
  EXPECT_DOUBLE_EQ(ParseRate("7200/h")->per_second, 2);
  EXPECT_FALSE(ParseRate("0")->limited());
  EXPECT_EQ(ParseRate("10/s")->text, "10/s");
  for (const char* bad : {"", "10", "10/d", "0/s", "-1/s", "ten/s", "10/ s", "1e3/s", "/s"}) {
    auto r = ParseRate(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("is not a rate")) << bad;
  }
}

TEST(TokenBucket, GivesAtTheRateAfterASmallBurst) {
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  TokenBucket bucket(*ParseRate("100/s"));  // burst: a tenth of a second, 10 tokens
  int given = 0;
  while (bucket.TryTake(t0)) ++given;
  EXPECT_EQ(given, 10);
  EXPECT_EQ(bucket.NextAt(t0), t0 + absl::Milliseconds(10));
  // Over the next second: 100 more, one every 10 ms, however often it is asked.
  for (int ms = 1; ms <= 1000; ++ms) {
    while (bucket.TryTake(t0 + absl::Milliseconds(ms))) ++given;
  }
  EXPECT_EQ(given, 110);
}

TEST(TokenBucket, IdleTimeFillsOnlyUpToTheBurst) {
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  TokenBucket bucket(*ParseRate("20/s"));  // burst 2
  EXPECT_TRUE(bucket.TryTake(t0));
  EXPECT_TRUE(bucket.TryTake(t0));
  EXPECT_FALSE(bucket.TryTake(t0));
  const absl::Time later = t0 + absl::Hours(1);
  EXPECT_TRUE(bucket.TryTake(later));
  EXPECT_TRUE(bucket.TryTake(later));
  EXPECT_FALSE(bucket.TryTake(later));  // an hour idle does not save an hour of tokens
  EXPECT_EQ(bucket.NextAt(later), later + absl::Milliseconds(50));
}

TEST(TokenBucket, SlowRatesStillGiveOneAtATime) {
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  TokenBucket bucket(*ParseRate("60/h"));  // one a minute, burst 1
  EXPECT_TRUE(bucket.TryTake(t0));
  EXPECT_FALSE(bucket.TryTake(t0 + absl::Seconds(59)));
  EXPECT_EQ(bucket.NextAt(t0 + absl::Seconds(59)), t0 + absl::Seconds(60));
  EXPECT_TRUE(bucket.TryTake(t0 + absl::Seconds(60)));
}

TEST(TokenBucket, UnlimitedAlwaysGives) {
  TokenBucket bucket(*ParseRate("0"));
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  for (int i = 0; i < 100000; ++i) ASSERT_TRUE(bucket.TryTake(t0));
  EXPECT_EQ(bucket.NextAt(t0), t0);
}

TEST(RateMeter, AveragesWholeWindowsAndCountsAQuietSpellAsSlow) {
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  RateMeter m;
  EXPECT_EQ(m.PerSecond(), 0);
  // 50 events in the first half second: no window closed, so no evidence yet.
  for (int i = 0; i < 50; ++i) m.Add(t0 + absl::Milliseconds(i * 10));
  EXPECT_EQ(m.PerSecond(), 0);
  // 100/s for 3 more seconds: the average settles on it.
  for (int i = 0; i < 300; ++i) m.Add(t0 + absl::Milliseconds(500 + i * 10));
  EXPECT_NEAR(m.PerSecond(), 100, 1);
  // Then one event after 9 quiet seconds: that window's rate is about 5/s (its
  // 50 events over 10 s), and the average halves toward it.
  const double before = m.PerSecond();
  m.Add(t0 + absl::Seconds(13));
  EXPECT_LT(m.PerSecond(), before * 0.6);
}

}  // namespace
}  // namespace volley::engine
