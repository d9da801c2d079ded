// delivery_status.h - what became of a recipient: the delivery log's "status"
//
// SYNOPSIS
//   DeliveryStatus s = DeliveryStatus::kDeferred;
//   std::string_view name = DeliveryStatusName(s);             // "deferred"
//   ASSIGN_OR_RETURN(DeliveryStatus back, ParseDeliveryStatus(name));
//   counters[static_cast<size_t>(s)].Add();                    // kDeliveryStatuses of them
//
// DESCRIPTION
//   The one list of delivery statuses and their names. The names are a
//   contract: they are the "status" values of the delivery log
//   (docs/delivery-log.md) and the "result" label values of
//   volley_deliveries_total (docs/metrics.md). The shard records an outcome
//   with one, the log writes its name, and every reader of the log (crash
//   replay, volley-load) turns the name back with ParseDeliveryStatus; nothing
//   passes a status around as a string.
//
//   Two kinds of status. The first kDeliveryOutcomes are outcomes: what an
//   attempt (or volleyd's own decision) made of a recipient; each recipient
//   gets exactly one terminal outcome (delivered, bounced, expired, cancelled,
//   suppressed) after any number of deferrals. The rest are feedback events
//   (IsFeedbackEvent): what came back later, from a bounce report, a feedback
//   loop or the unsubscribe endpoint (docs/feedback.md). An event never
//   replaces the terminal record: a delivered recipient that bounces later has
//   a "delivered" record and then a "bounced_async" one. Crash replay and every
//   count of outcomes skip events.
//
//   The outcomes are dense from 0 in the order of the metrics' labels, so an
//   outcome indexes an array of kDeliveryOutcomes counters.
//
//   queue::Final (queue/queue.h) is the queue's own, smaller list of how a
//   recipient leaves the queue; the queue knows nothing of this one (it does
//   not depend on metrics), and the engine maps one to the other.
//
// ERRORS
//   ParseDeliveryStatus: InvalidArgument naming the unknown name and the known
//   ones. An unknown name is never taken for one of them: a reader that meets
//   a status it does not know (a record of a newer volleyd) must say so, not
//   count it as a bounce.
#ifndef VOLLEY_METRICS_DELIVERY_STATUS_H_
#define VOLLEY_METRICS_DELIVERY_STATUS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace volley::metrics {

enum class DeliveryStatus : uint8_t {
  kDelivered,   // the server took it (2xx to the end of DATA)
  kDeferred,    // failed for now; will be retried
  kBounced,     // failed for good
  kExpired,     // still failing (or untried) at its deadline
  kCancelled,   // its job was cancelled before it was sent
  kSuppressed,  // not sent: on the suppression list (at intake or before an attempt)
  // Feedback events (after the terminal record, or for no recipient at all).
  kBouncedAsync,  // a bounce report (DSN, Action: failed) came back for it
  kDelayedAsync,  // a DSN said Action: delayed (a relay is still trying): recorded only
  kComplained,    // a feedback report (ARF) named it: a spam complaint
  kUnsubscribed,  // it asked to be unsubscribed (one-click, RFC 8058)
  kUnmatched,     // a report that names no job of ours (or a forged one): logged, nothing else
};
// Outcomes: the first kDeliveryOutcomes enumerators.
inline constexpr size_t kDeliveryOutcomes = 6;
inline constexpr size_t kDeliveryStatuses = 11;

// Indexed by the enumerator.
inline constexpr std::array<std::string_view, kDeliveryStatuses> kDeliveryStatusNames = {
    "delivered",     "deferred",      "bounced",    "expired",
    "cancelled",     "suppressed",    "bounced_async", "delayed_async",
    "complained",    "unsubscribed",  "unmatched"};

// IsFeedbackEvent - s is an event, not an outcome (see DESCRIPTION).
constexpr bool IsFeedbackEvent(DeliveryStatus s) {
  return static_cast<size_t>(s) >= kDeliveryOutcomes;
}

constexpr std::string_view DeliveryStatusName(DeliveryStatus s) {
  return kDeliveryStatusNames[static_cast<size_t>(s)];
}

// ParseDeliveryStatus - "deferred" -> kDeferred; exact and case-sensitive, as
// the log writes them.
absl::StatusOr<DeliveryStatus> ParseDeliveryStatus(std::string_view name);

}  // namespace volley::metrics

#endif  // VOLLEY_METRICS_DELIVERY_STATUS_H_
