#include "engine/outcomes.h"

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/committer.h"
#include "engine/host_name.h"
#include "engine/retry.h"
#include "metrics/delivery_log.h"

namespace volley::engine {

smtp::Outcome MakeOutcome(smtp::Outcome::Kind kind, int code, std::string enhanced,
                          std::string text) {
  smtp::Outcome o;
  o.kind = kind;
  o.code = code;
  o.enhanced = std::move(enhanced);
  o.text = std::move(text);
  o.stage = smtp::Stage::kConnect;
  return o;
}

RcptFate FateOf(const smtp::Outcome& reply, bool any_accepted) {
  switch (reply.kind) {
    case smtp::Outcome::Kind::kAccepted: return RcptFate::kDelivered;
    case smtp::Outcome::Kind::kPermanent: return RcptFate::kBounced;
    case smtp::Outcome::Kind::kTransient:
      return any_accepted && reply.stage == smtp::Stage::kRcpt && reply.code == 452
                 ? RcptFate::kNextTransaction
                 : RcptFate::kDeferred;
  }
  return RcptFate::kDeferred;
}

metrics::DeliveryStatus StatusOf(queue::Final how) {
  switch (how) {
    case queue::Final::kDelivered: return metrics::DeliveryStatus::kDelivered;
    case queue::Final::kBounced: return metrics::DeliveryStatus::kBounced;
    case queue::Final::kExpired: return metrics::DeliveryStatus::kExpired;
    case queue::Final::kCancelled: return metrics::DeliveryStatus::kCancelled;
    case queue::Final::kSuppressed: return metrics::DeliveryStatus::kSuppressed;
  }
  return metrics::DeliveryStatus::kBounced;
}

Outcomes::Outcomes(const Config& config, const ShardPlace& place, queue::Queue* queue,
                   const metrics::Classifier* classifier, metrics::ShardMetrics* metrics,
                   DeliveryWindow* window, std::mt19937_64* rng, const absl::Time* now)
    : config_(config),
      node_(NodeName(config)),
      lane_(place.index),
      queue_(queue),
      committer_(place.committer),
      classifier_(classifier),
      metrics_(metrics),
      window_(window),
      rng_(rng),
      now_(now),
      batch_(queue->NewOutcomeBatch()) {}

double Outcomes::Jitter() {
  return std::uniform_real_distribution<double>(kMinJitter, kMaxJitter)(*rng_);
}

std::string LastReplyText(int code, std::string_view enhanced, std::string_view text) {
  std::string reply = code != 0 ? absl::StrCat(code, " ") : std::string();
  absl::StrAppend(&reply, base::Sv(enhanced), enhanced.empty() ? "" : " ", base::Sv(text));
  return reply;
}

void Outcomes::Record(const Work* w, metrics::DeliveryStatus status, const smtp::Outcome& o,
                      const AttemptPlace& where, uint32_t attempt, std::string_view last_reply,
                      std::string_view last_class) {
  const absl::Time now = *now_;
  metrics_->deliveries[static_cast<size_t>(status)].Add();
  // Outcomes decided without a destination (a DNS verdict, expired untried,
  // cancelled) count as "other".
  metrics::DestinationCounters* counters = where.counters;
  if (counters == nullptr) {
    if (other_counters_ == nullptr) other_counters_ = &metrics_->Destination("other");
    counters = other_counters_;
  }
  counters->deliveries[static_cast<size_t>(status)].Add();
  if (status == metrics::DeliveryStatus::kDelivered) {
    metrics_->queue_seconds.Observe(absl::ToDoubleSeconds(now - w->job->record.queued_at));
  }
  metrics::DeliveryRecord r;
  r.ts = now;
  r.job = w->job->record.id;
  r.line = w->entry.line;
  r.rcpt = w->rcpt.to;
  r.status = status;
  r.code = o.code;
  r.enhanced = o.enhanced;
  r.response = o.text;
  r.klass = classifier_->Classify(status, o.code, o.enhanced, o.text);
  metrics_->CountClass(status, r.klass);
  if (where.host != nullptr) {
    r.host = where.host->host;
    r.port = where.host->port;
    r.mx = where.host->mx;
    r.backoff = where.backoff_level;
  }
  r.attempt = attempt;
  r.node = node_;
  r.txn = where.txn;
  r.tls_version = where.tls_version;
  r.tls_cipher = where.tls_cipher;
  r.source = where.source;
  r.last_reply = last_reply;
  r.last_class = last_class;
  metrics::FormatDeliveryRecord(r, &log_buffer_);
}

void Outcomes::Release(Work* w) { uncommitted_.push_back(window_->Release(w)); }

void Outcomes::Finish(Work* w, queue::Final how, const smtp::Outcome& o,
                      const AttemptPlace& where) {
  Record(w, StatusOf(how), o, where, w->entry.attempts + 1);
  batch_->Remove(w->entry, how);
  Release(w);
}

absl::Time Outcomes::Defer(Work* w, const smtp::Outcome& o, const AttemptPlace& where) {
  const absl::Time now = *now_;
  // A server's reply (or the 451 Volley records for a failed session) is kept
  // over an earlier one; Volley's own verdicts without a code (a suspension, a
  // DNS failure) only while there is none: an expiry names the last real reply.
  if (o.code != 0 || w->entry.last_reply.empty()) {
    w->entry.last_reply = LastReplyText(o.code, o.enhanced, o.text);
    w->entry.last_class = std::string(
        classifier_->Classify(metrics::DeliveryStatus::kDeferred, o.code, o.enhanced, o.text));
  }
  if (now >= w->deadline) {
    // That was the last try: the recipient expires, with the reply that ended it
    // (its code and enhanced code stay the server's, so they agree).
    smtp::Outcome expired = o;
    expired.kind = smtp::Outcome::Kind::kPermanent;
    expired.text = absl::StrCat("message expired after ", w->entry.attempts + 1,
                                " attempts; last reply: ", o.text);
    Record(w, metrics::DeliveryStatus::kExpired, expired, where, w->entry.attempts + 1,
           w->entry.last_reply, w->entry.last_class);
    batch_->Remove(w->entry, queue::Final::kExpired);
    Release(w);
    return absl::InfiniteFuture();
  }
  Record(w, metrics::DeliveryStatus::kDeferred, o, where, w->entry.attempts + 1);
  const absl::Time next =
      NextAttemptAt(*w->retry, w->entry.attempts + 1, Jitter(), now, w->deadline);
  batch_->Reschedule(w->entry, next);
  Release(w);
  return next;
}

void Outcomes::Expire(Work* w) {
  // No attempt is made now: the record carries the number of the last one, and
  // the reply that attempt got (empty when none was made, or the entry was
  // written by a volleyd that did not keep it).
  Record(w, metrics::DeliveryStatus::kExpired,
         MakeOutcome(smtp::Outcome::Kind::kPermanent, 0, "5.4.7",
                     absl::StrCat("message expired after ", w->entry.attempts, " attempts")),
         AttemptPlace{}, w->entry.attempts, w->entry.last_reply, w->entry.last_class);
  batch_->Remove(w->entry, queue::Final::kExpired);
  Release(w);
}

void Outcomes::Postpone(Work* w, const smtp::Outcome& why) {
  // The record carries the number of the last attempt, as Expire's does: none
  // was made now.
  Record(w, metrics::DeliveryStatus::kDeferred, why, AttemptPlace{}, w->entry.attempts);
  batch_->Postpone(w->entry, *now_ + kPostponeDelay * Jitter());
  Release(w);
}

bool Outcomes::Settled() const {
  return batch_->size() == 0 && log_buffer_.empty() && !committer_->busy(lane_);
}

void Outcomes::Hold(Work* w, absl::Time until) {
  batch_->Postpone(w->entry, until);
  Release(w);
}

void Outcomes::Suppress(Work* w, std::string why) {
  // Not tried now: the record carries the number of the last attempt, as Cancel's.
  Record(w, metrics::DeliveryStatus::kSuppressed,
         MakeOutcome(smtp::Outcome::Kind::kPermanent, 0, "5.7.1", std::move(why)), AttemptPlace{},
         w->entry.attempts);
  batch_->Remove(w->entry, queue::Final::kSuppressed);
  Release(w);
}

void Outcomes::Cancel(Work* w) {
  // Like Expire: no attempt now, so the record carries the number of the last.
  Record(w, metrics::DeliveryStatus::kCancelled,
         MakeOutcome(smtp::Outcome::Kind::kPermanent, 0, "",
                     "job cancelled before this recipient was sent"),
         AttemptPlace{}, w->entry.attempts);
  batch_->Remove(w->entry, queue::Final::kCancelled);
  Release(w);
}

void Outcomes::Commit() {
  // One unit at a time; what came meanwhile goes with the next.
  if (committer_->busy(lane_)) return;
  if (batch_->size() == 0 && log_buffer_.empty()) {
    // Only keys let go of untouched (a pause): nothing to write.
    window_->ForgetCommitted(std::exchange(uncommitted_, {}));
    return;
  }
  Committer::Unit unit;
  unit.log_bytes = std::exchange(log_buffer_, std::move(spare_log_buffer_));
  unit.batch = std::exchange(batch_, queue_->NewOutcomeBatch());
  unit.keys = std::exchange(uncommitted_, std::move(spare_keys_));
  log_buffer_.clear();
  uncommitted_.clear();
  committer_->Submit(std::move(unit), lane_);
}

void Outcomes::OnCommitDone() {
  std::optional<Committer::Unit> unit = committer_->TakeDone(lane_);
  if (!unit.has_value()) return;
  if (!unit->status.ok()) {
    if (fatal_.ok()) fatal_ = unit->status;
    return;
  }
  window_->ForgetCommitted(unit->keys);
  // Its storage serves the turn after next (the committer wrote and emptied
  // the records; the keys are forgotten).
  spare_log_buffer_ = std::move(unit->log_bytes);
  spare_log_buffer_.clear();
  spare_keys_ = std::move(unit->keys);
  spare_keys_.clear();
}

absl::Status Outcomes::CommitLast() {
  committer_->GiveUpWhenStalled();
  size_t unrecorded = 0;
  if (std::optional<Committer::Unit> unit = committer_->WaitDone(lane_)) {
    if (absl::IsResourceExhausted(unit->status)) {
      unrecorded += unit->batch->size();
    } else {
      RETURN_IF_ERROR(unit->status);
      window_->ForgetCommitted(unit->keys);
    }
  }
  Committer::Unit last;
  last.log_bytes = std::exchange(log_buffer_, {});
  last.batch = std::exchange(batch_, queue_->NewOutcomeBatch());
  committer_->Submit(std::move(last), lane_);
  std::optional<Committer::Unit> done = committer_->WaitDone(lane_);
  if (absl::IsResourceExhausted(done->status)) {
    unrecorded += done->batch->size();
  } else {
    RETURN_IF_ERROR(done->status);
  }
  if (unrecorded > 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "stopped with ", unrecorded, " outcomes not recorded in the queue (the disk is "
        "full?): those recipients will be tried again, a possible duplicate, never a loss"));
  }
  return absl::OkStatus();
}

}  // namespace volley::engine
