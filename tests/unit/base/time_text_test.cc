// Tests of AppendUtcTime: the text must be absl::FormatTime's, to the byte, for
// every time: the delivery log's "ts" and the admin API's times are contracts.
#include "base/time_text.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace volley::base {
namespace {

std::string Got(absl::Time t, TimePrecision p) {
  std::string out = "x";  // appended to, not replaced
  AppendUtcTime(t, p, &out);
  return out.substr(1);
}

void ExpectAsAbsl(absl::Time t) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  EXPECT_EQ(Got(t, TimePrecision::kMillis), absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, utc))
      << absl::FormatTime(t);
  EXPECT_EQ(Got(t, TimePrecision::kSeconds), absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, utc))
      << absl::FormatTime(t);
}

absl::Time At(int64_t y, int m, int d, int hh = 0, int mm = 0, int ss = 0) {
  return absl::FromCivil(absl::CivilSecond(y, m, d, hh, mm, ss), absl::UTCTimeZone());
}

TEST(AppendUtcTime, WritesTheDocumentedExamples) {
  const absl::Time t = absl::FromUnixMillis(1795873501123);
  EXPECT_EQ(Got(t, TimePrecision::kMillis), "2026-11-28T13:45:01.123Z");
  EXPECT_EQ(Got(t, TimePrecision::kSeconds), "2026-11-28T13:45:01Z");
}

TEST(AppendUtcTime, ReadsAsAbslFormatTimeAtEveryEdge) {
  const std::vector<absl::Time> edges = {
      absl::UnixEpoch(),
      absl::UnixEpoch() + absl::Nanoseconds(999999),   // still .000
      absl::UnixEpoch() + absl::Nanoseconds(1000000),  // .001
      absl::UnixEpoch() - absl::Nanoseconds(1),        // before 1970: absl's way
      At(1969, 12, 31, 23, 59, 59),
      At(2000, 2, 29, 12),                       // a leap day of a 400th year
      At(2100, 2, 28, 23, 59, 59),               // 2100 is not leap
      At(2100, 3, 1),
      At(2026, 12, 31, 23, 59, 59) + absl::Milliseconds(999),
      At(9999, 12, 31, 23, 59, 59) + absl::Nanoseconds(999999999),  // the last fast one
      At(10000, 1, 1),                            // five-digit year: absl's way
      At(1, 1, 1),
      absl::InfiniteFuture(),
      absl::InfinitePast(),
  };
  for (const absl::Time t : edges) ExpectAsAbsl(t);
}

TEST(AppendUtcTime, ReadsAsAbslFormatTimeInEveryYearOfTheFastRange) {
  // Each year's first and last second, the end of February and the day after,
  // and a time of day that moves through the hours, minutes and milliseconds.
  for (int64_t y = 1970; y <= 9999; ++y) {
    const int k = static_cast<int>(y % 1000);
    ExpectAsAbsl(At(y, 1, 1));
    ExpectAsAbsl(At(y, 12, 31, 23, 59, 59) + absl::Milliseconds(k));
    ExpectAsAbsl(At(y, 2, 28, k % 24, k % 60, (k * 7) % 60));
    ExpectAsAbsl(At(y, 3, 1) - absl::Nanoseconds(1));
    ExpectAsAbsl(At(y, 1 + k % 12, 1 + k % 28, 23 - k % 24) + absl::Microseconds(k * 997));
    if (HasFailure()) return;  // one year's failures say enough
  }
}

}  // namespace
}  // namespace volley::base
