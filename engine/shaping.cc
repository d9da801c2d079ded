// shaping.cc - see shaping.h
#include "engine/shaping.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace volley::engine {

namespace {

// The burst a bucket allows: this much of its rate, and one token at least.
constexpr double kBurstSeconds = 0.1;
constexpr uint64_t kMaxCount = 100'000'000;
// Tokens accumulate in floating point: ten additions of 0.1 make 0.9999999999999999,
// not 1. A token counts as there when it is this close.
constexpr double kWhole = 1 - 1e-9;

}  // namespace

absl::StatusOr<Rate> ParseRate(std::string_view text) {
  Rate r;
  r.text = std::string(text);
  if (text == "0") return r;
  const size_t slash = text.find('/');
  uint64_t count = 0;
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", base::Sv(text), "\" is not a rate such as \"3000/min\" (N/s, N/min or N/h; \"0\": no limit)"));
  };
  if (slash == std::string_view::npos ||
      !absl::SimpleAtoi(base::Sv(text.substr(0, slash)), &count) || count == 0 ||
      count > kMaxCount) {
    return bad();
  }
  const std::string_view unit = text.substr(slash + 1);
  double seconds = 0;
  if (unit == "s") {
    seconds = 1;
  } else if (unit == "min") {
    seconds = 60;
  } else if (unit == "h") {
    seconds = 3600;
  } else {
    return bad();
  }
  r.per_second = static_cast<double>(count) / seconds;
  return r;
}

TokenBucket::TokenBucket(const Rate& rate)
    : per_second_(rate.per_second),
      capacity_(std::max(1.0, rate.per_second * kBurstSeconds)),
      tokens_(capacity_) {}

void TokenBucket::Refill(absl::Time now) {
  if (last_ == absl::InfinitePast()) last_ = now;
  if (now > last_) {
    tokens_ = std::min(capacity_, tokens_ + absl::ToDoubleSeconds(now - last_) * per_second_);
    last_ = now;
  }
}

bool TokenBucket::TryTake(absl::Time now) {
  if (per_second_ <= 0) return true;
  Refill(now);
  if (tokens_ < kWhole) return false;
  tokens_ = std::max(0.0, tokens_ - 1);
  return true;
}

absl::Time TokenBucket::NextAt(absl::Time now) {
  if (per_second_ <= 0) return now;
  Refill(now);
  if (tokens_ >= kWhole) return now;
  return now + absl::Seconds((1 - tokens_) / per_second_);
}

void RateMeter::Add(absl::Time now) {
  if (window_start_ == absl::InfinitePast()) window_start_ = now;
  const absl::Duration elapsed = now - window_start_;
  if (elapsed >= kWindow) {
    // A quiet spell longer than a window counts as the low rate it was.
    const double rate = count_ / absl::ToDoubleSeconds(elapsed);
    average_ = have_average_ ? (average_ + rate) / 2 : rate;
    have_average_ = true;
    window_start_ = now;
    count_ = 0;
  }
  ++count_;
}

}  // namespace volley::engine
