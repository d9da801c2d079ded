// retry.h - when a deferred recipient is tried again
//
// RetryDelay: the wait after the `attempts`-th failed attempt (1 = the first):
// initial * 2^(attempts-1), capped at max, then times `jitter` (the caller draws
// it uniformly from [kMinJitter, kMaxJitter]) so that a burst of deferrals does
// not come back as a burst. Pure: no clock, no random source of its own.
//
// NextAttemptAt: now + RetryDelay, but never past `deadline` (max_age, or the
// job's expires): the last try happens at the deadline, and a recipient still
// deferred after it expires.
#ifndef VOLLEY_ENGINE_RETRY_H_
#define VOLLEY_ENGINE_RETRY_H_

#include <cstdint>

#include "absl/time/time.h"
#include "engine/config.h"

namespace volley::engine {

inline constexpr double kMinJitter = 0.8;
inline constexpr double kMaxJitter = 1.2;

absl::Duration RetryDelay(const RetryConfig& retry, uint32_t attempts, double jitter);

absl::Time NextAttemptAt(const RetryConfig& retry, uint32_t attempts, double jitter,
                         absl::Time now, absl::Time deadline);

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_RETRY_H_
