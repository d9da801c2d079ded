// outcomes.h - a shard's outcomes: record, defer, expire, cancel, and the commit hand-off
//
// SYNOPSIS
//   Outcomes outcomes(config, place, queue, classifier, metrics, &window, &rng, &now);
//   outcomes.Finish(w, queue::Final::kDelivered, reply, where);
//   outcomes.Defer(w, reply, where);      // retry later, or expire at the deadline
//   RETURN_IF_ERROR(outcomes.Commit());   // once per loop turn
//
// DESCRIPTION
//   Every recipient taken ends here, once per attempt: a delivery-log record
//   (metrics/delivery_log.h), a change to its queue entry in this turn's
//   OutcomeBatch (removed, rescheduled, postponed), the metrics, and its place
//   in the window given back (engine/window.h). Once per loop turn Commit hands
//   the turn's records and batch to the committer (engine/committer.h), which
//   writes the log, then the queue, off the loop: a recipient's queue entry
//   changes only after its outcome line is in the log. Its key stays taken until
//   the unit is written (OnCommitDone), so it is never taken twice meanwhile.
//
//   Deferrals are rescheduled by the recipient's retry policy with jitter, never
//   past its deadline; the try at the deadline that fails expires it. A
//   Postpone is volleyd's own bound (the resolver's queue full): no attempt is
//   counted, retried after kPostponeDelay.
//
// CONTRACT
//   Single-threaded (one shard). `now` points at the shard's clock.
#ifndef VOLLEY_ENGINE_OUTCOMES_H_
#define VOLLEY_ENGINE_OUTCOMES_H_

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "dns/routes.h"
#include "engine/boards.h"
#include "engine/config.h"
#include "engine/smtp/client.h"
#include "engine/window.h"
#include "engine/work.h"
#include "metrics/classify.h"
#include "metrics/delivery_status.h"
#include "metrics/metrics.h"
#include "queue/queue.h"

namespace volley::engine {

// How long a recipient stopped by volleyd's own bound (the resolver's queue
// full) waits before it is taken again: long enough for the queue to drain.
inline constexpr absl::Duration kPostponeDelay = absl::Seconds(15);

// MakeOutcome - an outcome decided without a server's reply on the matter.
smtp::Outcome MakeOutcome(smtp::Outcome::Kind kind, int code, std::string enhanced,
                          std::string text);

// LastReplyText - a reply as an expired record's last_reply names it (and the
// queue keeps it between attempts): "451 4.7.1 text", without the code when
// there was no reply (a DNS verdict: "4.4.3 text").
std::string LastReplyText(int code, std::string_view enhanced, std::string_view text);

// Where an attempt was made, for its record: nothing of it when no connection
// was made (a DNS verdict, expired untried, cancelled).
struct AttemptPlace {
  metrics::DestinationCounters* counters = nullptr;  // null: "other"'s
  const dns::Endpoint* host = nullptr;
  int backoff_level = 0;
  std::string_view tls_version;
  std::string_view tls_cipher;
  std::string_view source;  // the egress source's name
  std::string_view txn;     // the transaction the recipient was sent in, if any
};

// RcptFate - what a recipient's reply in a finished transaction means.
// kNextTransaction: a 452 to RCPT while others of the transaction were accepted
// (too many recipients, RFC 5321 4.5.3.1.10): sent in the next transaction,
// not counted as an attempt. When none was accepted, 452 means "later".
enum class RcptFate { kDelivered, kBounced, kDeferred, kNextTransaction };
RcptFate FateOf(const smtp::Outcome& reply, bool any_accepted);

// StatusOf - the delivery log's status of a final outcome.
metrics::DeliveryStatus StatusOf(queue::Final how);

class Outcomes {
 public:
  Outcomes(const Config& config, const ShardPlace& place, queue::Queue* queue,
           const metrics::Classifier* classifier, metrics::ShardMetrics* metrics,
           DeliveryWindow* window, std::mt19937_64* rng, const absl::Time* now);

  // Finish - a final outcome (delivered, bounced, expired) of the attempt just made.
  void Finish(Work* w, queue::Final how, const smtp::Outcome& o, const AttemptPlace& where);
  // Defer - the attempt just made failed for now: retry later, or expire when it
  // was the try at the deadline. The reply and its class stay with the queue
  // entry (QueuedRecipient::last_reply) for a later expiry. Returns when it is
  // tried again (InfiniteFuture: it expired).
  absl::Time Defer(Work* w, const smtp::Outcome& o, const AttemptPlace& where);
  // Expire - taken from the queue past its deadline, without an attempt: the
  // record names the last attempt's reply and class, kept in the entry.
  void Expire(Work* w);
  // Postpone - not tried because one of volleyd's own bounds stopped it: back to
  // the queue for kPostponeDelay, logged as deferred, no attempt counted.
  void Postpone(Work* w, const smtp::Outcome& why);
  // Cancel - its job was cancelled before it was sent.
  // Suppress - w's recipient is on the suppression list: finished unsent,
  // `why` naming the entry.
  void Suppress(Work* w, std::string why);
  void Cancel(Work* w);
  // Release - back to the queue untouched (its job paused): nothing recorded.
  void Release(Work* w);
  // Hold - its domain is suspended (engine/destination_control.h): back to
  // the queue, due at `until`, its attempts as they were; nothing logged per
  // recipient (the suspension is logged once).
  void Hold(Work* w, absl::Time until);

  // Commit - hand this turn's outcomes to the committer (when it is free).
  void Commit();
  // OnCommitDone - the committer finished a unit: its keys are let go of; a
  // failure for good is kept (fatal()).
  void OnCommitDone();
  // CommitLast - at the end: the unit under way, then what is left, written on
  // this thread. What could not be recorded (a full disk) is an error, but stays
  // in the queue: sent again after a restart, a possible duplicate, never a loss.
  absl::Status CommitLast();
  const absl::Status& fatal() const { return fatal_; }
  // Settled - nothing recorded waits to be written, nor is being written:
  // the queue holds every change this shard made.
  bool Settled() const;
  // SetClassifier - a reload's [[classify]] rules (engine/reload.h), for the
  // records made from now on.
  void SetClassifier(const metrics::Classifier* classifier) { classifier_ = classifier; }

 private:
  // Record - one delivery-log record; `last_reply` and `last_class` only for
  // an expired record (DeliveryRecord::last_reply).
  void Record(const Work* w, metrics::DeliveryStatus status, const smtp::Outcome& o,
              const AttemptPlace& where, uint32_t attempt, std::string_view last_reply = {},
              std::string_view last_class = {});
  double Jitter();

  const Config& config_;
  // Every record's "node" (engine/host_name.h): a cluster's logs merge.
  const std::string node_;
  const size_t lane_;
  queue::Queue* queue_;
  Committer* committer_;
  const metrics::Classifier* classifier_;  // the class of failure records
  metrics::ShardMetrics* metrics_;
  // "other"'s counters, for outcomes without a destination; found on first use.
  metrics::DestinationCounters* other_counters_ = nullptr;
  DeliveryWindow* window_;
  std::mt19937_64* rng_;
  const absl::Time* now_;
  std::unique_ptr<queue::Queue::OutcomeBatch> batch_;
  std::string log_buffer_;  // this turn's delivery-log records, formatted
  // Keys (job number, key) let go of since the last committed batch: see Job::taken.
  std::vector<std::pair<uint32_t, std::string>> uncommitted_;
  // The buffers of the unit the committer gave back, emptied, kept for the
  // next turn: two of each take turns, so a turn's records and keys grow into
  // storage already there instead of a new allocation per turn (bounded like
  // a unit: by the window).
  std::string spare_log_buffer_;
  std::vector<std::pair<uint32_t, std::string>> spare_keys_;
  // A commit failed for good (not a full disk): the loop ends with it.
  absl::Status fatal_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_OUTCOMES_H_
