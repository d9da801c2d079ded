// recovery.h - what a crash left half done, put right before any shard runs
//
// SYNOPSIS
//   RETURN_IF_ERROR(ReplayUnappliedOutcomes(queue, log, config.retry));
//
// DESCRIPTION
//   The committer (engine/committer.h) writes each unit's outcomes to the
//   delivery log, then to the queue. Outcomes that reached the log but not the
//   queue (a crash between the two writes) are applied to the queue now, so
//   that their recipients are not sent again and keep one terminal record each.
//   The queue keeps the log position of its last commit; every record after it
//   is matched to its queue entry by job and line, and applied only when it is
//   for the attempt the entry is at (anything else was applied already). A
//   deferral's retry time is not in the log: the default retry policy's
//   interval for that attempt, from now. When the position is no longer in the
//   log (rotated away), nothing can be matched: those recipients are tried
//   again, a possible duplicate, never a loss.
#ifndef VOLLEY_ENGINE_RECOVERY_H_
#define VOLLEY_ENGINE_RECOVERY_H_

#include "absl/status/status.h"
#include "engine/config.h"
#include "metrics/delivery_log.h"
#include "queue/queue.h"

namespace volley::engine {

absl::Status ReplayUnappliedOutcomes(queue::Queue* queue, metrics::DeliveryLog* log,
                                     const RetryConfig& retry);

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_RECOVERY_H_
