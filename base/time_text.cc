// time_text.cc - see time_text.h
#include "base/time_text.h"

#include <cstdint>

namespace volley::base {
namespace {

// The seconds written by arithmetic: 1970-01-01T00:00:00Z to
// 9999-12-31T23:59:59Z, where every year has four digits and no sign.
constexpr int64_t kFirstFastSecond = 0;
constexpr int64_t kLastFastSecond = 253402300799;

// Two - v (below 100) as two decimal digits at `at`.
void Two(unsigned v, char* at) {
  at[0] = static_cast<char>('0' + v / 10);
  at[1] = static_cast<char>('0' + v % 10);
}

// CivilFromDays - the year, month (1-12) and day (1-31) of day `days` since
// 1970-01-01 (days >= 0), by the proleptic Gregorian calendar: eras of 400
// years (146097 days), years counted from March so that the leap day ends a
// year (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
void CivilFromDays(int64_t days, int64_t* year, unsigned* month, unsigned* day) {
  const int64_t z = days + 719468;  // days since 0000-03-01
  const int64_t era = z / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);                  // [0, 146096]
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // [0, 399]
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);              // [0, 365]
  const unsigned mp = (5 * doy + 2) / 153;                                   // [0, 11], March first
  *day = doy - (153 * mp + 2) / 5 + 1;
  *month = mp < 10 ? mp + 3 : mp - 9;
  *year = static_cast<int64_t>(yoe) + era * 400 + (*month <= 2 ? 1 : 0);
}

}  // namespace

void AppendUtcTime(absl::Time t, TimePrecision precision, std::string* out) {
  const bool millis = precision == TimePrecision::kMillis;
  if (t < absl::FromUnixSeconds(kFirstFastSecond) ||
      t >= absl::FromUnixSeconds(kLastFastSecond + 1)) {
    out->append(absl::FormatTime(millis ? "%Y-%m-%dT%H:%M:%E3SZ" : "%Y-%m-%dT%H:%M:%SZ", t,
                                 absl::UTCTimeZone()));
    return;
  }
  // Both round down (toward the past), as absl::FormatTime truncates.
  const int64_t unix_millis = absl::ToUnixMillis(t);
  const int64_t second = unix_millis / 1000;
  const auto milli = static_cast<unsigned>(unix_millis % 1000);
  const int64_t days = second / 86400;
  const auto in_day = static_cast<unsigned>(second % 86400);
  int64_t year = 0;
  unsigned month = 0, day = 0;
  CivilFromDays(days, &year, &month, &day);
  // "YYYY-MM-DDTHH:MM:SS.mmmZ"
  char text[24] = {'0', '0', '0', '0', '-', '0', '0', '-', '0', '0', 'T', '0',
                   '0', ':', '0', '0', ':', '0', '0', '.', '0', '0', '0', 'Z'};
  const auto y = static_cast<unsigned>(year);
  Two(y / 100, text);
  Two(y % 100, text + 2);
  Two(month, text + 5);
  Two(day, text + 8);
  Two(in_day / 3600, text + 11);
  Two(in_day / 60 % 60, text + 14);
  Two(in_day % 60, text + 17);
  if (millis) {
    text[20] = static_cast<char>('0' + milli / 100);
    text[21] = static_cast<char>('0' + milli / 10 % 10);
    text[22] = static_cast<char>('0' + milli % 10);
    out->append(text, sizeof text);
  } else {
    text[19] = 'Z';
    out->append(text, 20);
  }
}

}  // namespace volley::base
