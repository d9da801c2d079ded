#include "engine/retry.h"

#include <algorithm>

namespace volley::engine {

absl::Duration RetryDelay(const RetryConfig& retry, uint32_t attempts, double jitter) {
  absl::Duration d = retry.initial;
  // Doubling stops at max, so the loop is short whatever `attempts` is.
  for (uint32_t i = 1; i < attempts && d < retry.max; ++i) d *= 2;
  d = std::min(d, retry.max);
  return d * std::clamp(jitter, kMinJitter, kMaxJitter);
}

absl::Time NextAttemptAt(const RetryConfig& retry, uint32_t attempts, double jitter,
                         absl::Time now, absl::Time deadline) {
  return std::min(now + RetryDelay(retry, attempts, jitter), std::max(now, deadline));
}

}  // namespace volley::engine
