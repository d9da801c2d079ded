// shaping.h - rates and token buckets for a destination's limits
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(Rate r, ParseRate("3000/min"));   // 50 a second
//   TokenBucket bucket(r);
//   if (bucket.TryTake(now)) Send(); else WakeAt(bucket.NextAt(now));
//
// DESCRIPTION
//   A rate is "N/s", "N/min" or "N/h" (N a positive integer), or "0" for no limit.
//   The bucket holds at most a tenth of a second's worth of tokens and at least one,
//   and starts full: a destination never sees more than that burst above its rate,
//   so over any window the count stays within one burst of rate x window (issue 5's
//   test holds volley-sink's measured rate to 5% of the limit). A bucket of an
//   unlimited rate always gives.
//
// CONTRACT
//   Plain values; `now` is the caller's clock, never read here.
#ifndef VOLLEY_ENGINE_SHAPING_H_
#define VOLLEY_ENGINE_SHAPING_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace volley::engine {

struct Rate {
  double per_second = 0;  // 0: unlimited
  std::string text = "0";  // as configured, for messages

  bool limited() const { return per_second > 0; }
};

// ParseRate - "3000/min" -> 50 per second; "0" -> unlimited. InvalidArgument
// naming the text otherwise.
absl::StatusOr<Rate> ParseRate(std::string_view text);

class TokenBucket {
 public:
  TokenBucket() = default;
  explicit TokenBucket(const Rate& rate);

  // TryTake - one token, if there is one by `now`.
  bool TryTake(absl::Time now);
  // NextAt - when the next token is there (now when there is one).
  absl::Time NextAt(absl::Time now);

 private:
  void Refill(absl::Time now);
  double per_second_ = 0;
  double capacity_ = 1;
  double tokens_ = 1;
  absl::Time last_ = absl::InfinitePast();
};

// RateMeter - how many events per second a destination has been taking lately:
// each whole window of kWindow folds its rate into a moving average (half the
// old, half the new), so a burst or a lull moves it within a few seconds. What
// adaptive backoff halves for a destination that has no configured rate.
class RateMeter {
 public:
  static constexpr absl::Duration kWindow = absl::Seconds(1);
  void Add(absl::Time now);
  // PerSecond - the average; 0 until a window has closed (no evidence yet: a
  // few events in a first fraction of a second say nothing of the rate).
  double PerSecond() const { return have_average_ ? average_ : 0; }

 private:
  absl::Time window_start_ = absl::InfinitePast();
  double count_ = 0;
  double average_ = 0;
  bool have_average_ = false;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_SHAPING_H_
