// reasons.h - why a recipient or a destination waits: whose a deferral is, and a route that cannot be reached
//
// SYNOPSIS
//   if (ScopeOf(reply, klass) == ReplyScope::kRecipient) { /* defer it, leave the route be */ }
//
//   Reachability reach;
//   if (reach.OnConnectFailed("127.0.0.1:1", "connection refused", next_try, now))
//     base::LogWarning("destination %s: %s", name, reach.Describe(now));   // once per change
//   if (reach.OnConnected()) base::LogInfo("destination %s: reachable again", name);
//
// DESCRIPTION
//   ScopeOf decides whether a server's temporary failure speaks of one
//   recipient or of the whole route, so that [[backoff]] (docs/config.md,
//   "Adaptive backoff") only slows a destination down for what concerns it. A
//   reply concerns the recipient alone (kRecipient) when all of these hold:
//     - it is a transient reply to RCPT (RFC 5321 section 4.2.5: the server
//       refuses that recipient for now, the session goes on);
//     - its code is not 421 (the server is closing the session: section 3.8);
//     - its enhanced code is not X.4.X (RFC 3463 "network and routing": a
//       lost connection or a timeout, which Volley records as 451 4.4.2 at the
//       stage it happened, is the route's);
//     - its class is not one that speaks of the sender rather than the
//       recipient (kRouteClasses: rate_limited, the sending rate; tls_failure,
//       the connection; policy, X.7.X: the sending address's reputation, a
//       blocklist), unless its text says it is greylisting (greylist /
//       graylist / grey-list, any case): greylisting is per (sender,
//       recipient) pair by design, whatever words the server adds ("451 4.7.1
//       Greylisted, please try again later" is rate_limited by the built-in
//       [[classify]] table because of "try again later", "451 4.7.1
//       Greylisted" policy because of 4.7).
//   Everything else (a 421 at any stage, a refused greeting, MAIL or DATA, a
//   lost connection, a throttling RCPT reply) is the route's. A [[backoff]]
//   rule whose action is "bounce" acts on the recipient either way.
//
//   Reachability is a destination's connection state for the operator: after
//   every host of its route failed before a session got going (a refused or
//   timed-out connect, a refused greeting), it is unreachable, with the error
//   and the next try; a session that gets going makes it reachable again.
//   OnConnectFailed and OnConnected say when the state changed (a first
//   failure, another error, back again), which is when volleyd logs: once per
//   destination and change, not once per attempt.
//
// BOUNDS
//   The error kept is cut to kMaxReachErrorBytes (at a UTF-8 boundary): it may
//   come from a server's greeting.
//
// DIAGNOSTICS
//   None: pure decisions and state. The shard logs (engine/shard.cc).
#ifndef VOLLEY_ENGINE_REASONS_H_
#define VOLLEY_ENGINE_REASONS_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "engine/smtp/client.h"

namespace volley::engine {

// The classes (metrics/classify.h, built-in table) that speak of the sender:
// the sending rate, the connection, its reputation. A RCPT reply of one of them
// is the route's (unless it names greylisting).
inline constexpr std::string_view kRouteClasses[] = {"rate_limited", "tls_failure", "policy"};

// The longest error a Reachability keeps (a greeting's text may be long).
inline constexpr size_t kMaxReachErrorBytes = 256;

enum class ReplyScope { kRecipient, kRoute };

// ScopeOf - whose `reply` (a transient failure) is; `klass` its [[classify]] class.
ReplyScope ScopeOf(const smtp::Outcome& reply, std::string_view klass);

// LooksLikeGreylisting - the reply text names greylisting.
bool LooksLikeGreylisting(std::string_view text);

// CutUtf8 - `s` cut to at most `max` bytes, not inside a UTF-8 sequence.
std::string_view CutUtf8(std::string_view s, size_t max);

class Reachability {
 public:
  // OnConnectFailed - no host of the route is left: the last one tried,
  // `host` ("127.0.0.1:1"), failed with `error` ("connection refused");
  // `next_try` is when what waits is tried again (InfiniteFuture: nothing
  // waits). True when the state changed: reachable before, or another error.
  bool OnConnectFailed(std::string_view host, std::string_view error, absl::Time next_try,
                       absl::Time now);
  // OnConnected - a session got going. True when it was unreachable.
  bool OnConnected();

  bool unreachable() const { return unreachable_; }
  // "cannot connect to HOST: ERROR" (empty while reachable).
  const std::string& last_error() const { return last_error_; }
  absl::Time next_try() const { return next_try_; }
  absl::Time since() const { return since_; }
  // Describe - last_error() and "; next try in 30s" (when there is one).
  std::string Describe(absl::Time now) const;

 private:
  bool unreachable_ = false;
  std::string last_error_;
  absl::Time next_try_ = absl::InfiniteFuture();
  absl::Time since_ = absl::InfinitePast();
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_REASONS_H_
