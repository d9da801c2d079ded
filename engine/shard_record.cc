// shard_record.cc - what a shard records of an attempt that did not deliver:
// deferrals, a destination that failed, one that cannot be reached, and the
// [[backoff]] rules (engine/shard.h, "record"). Split from shard.cc to keep
// the loop's file to the data flow: take, route, admit, send.
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "engine/shard.h"

namespace volley::engine {

AttemptPlace Shard::PlaceOf(const Destination* d, const Conn* c) const {
  AttemptPlace where;
  if (d == nullptr) return where;
  where.counters = d->counters;
  where.host = c != nullptr ? &c->Host() : &d->limits.route()->hosts.front();
  where.backoff_level = d->limits.backoff_level();
  if (c != nullptr) {
    where.tls_version = c->tls_version;
    where.tls_cipher = c->tls_cipher;
    where.txn = c->txn;
    if (c->source >= 0) where.source = config_.sources[static_cast<size_t>(c->source)].name;
  }
  return where;
}

absl::Time Shard::Defer(Work* w, const smtp::Outcome& o, Destination* d, const Conn* c) {
  // Only a server's own reply on a connection moves the destination's backoff:
  // not the deferrals a suspension or a failed route makes.
  if (c != nullptr && c->dest == d && ApplyBackoffRule(w, o, d, c)) {
    return absl::InfiniteFuture();
  }
  return outcomes_.Defer(w, o, PlaceOf(d, c));
}

absl::Time Shard::FailDestination(Destination* d, const smtp::Outcome& why, const Conn* c) {
  absl::Time next_try = absl::InfiniteFuture();
  for (Work* w : d->ready.TakeAll()) next_try = std::min(next_try, Defer(w, why, d, c));
  return next_try;
}

void Shard::Unreachable(Destination* d, const Conn* c, const smtp::Outcome& why,
                        absl::Time next_try) {
  // The connect's own error reads best ("connection refused"); a session
  // refused later (a 421 or 554 greeting) is named by its reply.
  std::string error;
  if (c->connect_errno != 0) {
    error = absl::AsciiStrToLower(std::strerror(c->connect_errno));
  } else {
    error = why.code != 0 ? absl::StrCat(why.code, " ", why.enhanced, " ", why.text) : why.text;
  }
  if (d->reach.OnConnectFailed(c->Host().name, error, next_try, now_)) {
    base::LogWarning("destination %s: %s", d->limits.route()->name, d->reach.Describe(now_));
  }
}

bool Shard::ApplyBackoffRule(Work* w, const smtp::Outcome& o, Destination* d, const Conn* c) {
  const std::string_view klass =
      classifier_->Classify(metrics::DeliveryStatus::kDeferred, o.code, o.enhanced, o.text);
  const BackoffRule* rule = nullptr;
  for (const BackoffRule& r : live_->backoff) {
    if (r.klass == klass) {
      rule = &r;
      break;
    }
  }
  if (rule == nullptr) return false;
  // Greylisting and the like defer that recipient only: the route is fine, and
  // backing it off would slow every other recipient down for nothing. A
  // "bounce" rule is about the recipient, so it still applies.
  if (rule->action != BackoffAction::kBounce && ScopeOf(o, klass) == ReplyScope::kRecipient) {
    return false;
  }
  switch (d->limits.OnReply(*rule, o, now_)) {
    case DestinationLimits::ReplyEffect::kNone: break;
    case DestinationLimits::ReplyEffect::kBackoffRaised: metrics_->backoff_events[0].Add(); break;
    case DestinationLimits::ReplyEffect::kSuspended: metrics_->backoff_events[1].Add(); break;
    case DestinationLimits::ReplyEffect::kBounce: {
      smtp::Outcome bounced = o;
      bounced.kind = smtp::Outcome::Kind::kPermanent;
      bounced.text =
          absl::StrCat("bounced by the [[backoff]] rule for \"", rule->klass, "\": ", o.text);
      outcomes_.Finish(w, queue::Final::kBounced, bounced, PlaceOf(d, c));
      return true;
    }
  }
  if (rule->action == BackoffAction::kBackoff) Activate(d);  // its steps down are Dispatch's
  return false;
}

}  // namespace volley::engine
