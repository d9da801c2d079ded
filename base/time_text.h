// time_text.h - RFC 3339 UTC timestamps appended to a buffer, without a time-zone lookup
//
// SYNOPSIS
//   base::AppendUtcTime(t, base::TimePrecision::kMillis, &out);   // 2026-11-28T13:45:01.123Z
//   base::AppendUtcTime(t, base::TimePrecision::kSeconds, &out);  // 2026-11-28T13:45:01Z
//
// DESCRIPTION
//   The same text as absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ") (kMillis) or
//   ("%Y-%m-%dT%H:%M:%SZ") (kSeconds) in absl::UTCTimeZone(), fractions
//   truncated as absl does, for every absl::Time. Times from 1970 to year 9999
//   (every clock reading volleyd writes) are converted by arithmetic on the
//   day number (the proleptic Gregorian calendar, as absl's civil time), with
//   no time-zone lookup and no string of their own: the delivery log writes
//   one per record, at the wire's pace. Other times (before 1970, past 9999,
//   the infinities) go through absl::FormatTime, so they read exactly as before.
//
// CONTRACT
//   Appends only; any thread; no state.
//
// DIAGNOSTICS
//   None: every time has a text ("infinite-future" for InfiniteFuture, as absl).
#ifndef VOLLEY_BASE_TIME_TEXT_H_
#define VOLLEY_BASE_TIME_TEXT_H_

#include <string>

#include "absl/time/time.h"

namespace volley::base {

enum class TimePrecision { kSeconds, kMillis };

void AppendUtcTime(absl::Time t, TimePrecision precision, std::string* out);

}  // namespace volley::base

#endif  // VOLLEY_BASE_TIME_TEXT_H_
