// NAME
//   connection_guard.h - which held HTTP connections to close: the oldest
//   still silent at the cap (then the longest idle kept alive), and any past
//   its deadline
//
// SYNOPSIS
//   #include "engine/http/connection_guard.h"
//
//   http::ConnectionGuard guard(/*max_connections=*/1024, /*request_timeout=*/absl::Seconds(5),
//                               /*keep_alive=*/absl::Seconds(75));
//   if (auto evict = guard.Opened(id, fd, now)) shutdown(*evict, SHUT_RDWR);
//   guard.HeadReceived(id, now);     // the request head is complete: never evicted now
//   guard.Answered(id);              // the answer is queued: no deadline of ours
//   guard.Idle(id, now);             // answer sent, kept for a next request
//   guard.Closed(id);                // the server let go of the connection
//   for (int fd : guard.Expired(now)) shutdown(fd, SHUT_RDWR);
//
// DESCRIPTION
//   The policy that keeps an event-driven HTTP server (engine/http/server.h)
//   answering while thousands of idle or slow connections are held against
//   it. It does no I/O and reads no clock: the server calls it as connections
//   open, progress and close, and shuts down the descriptors it names.
//
//   A connection goes through three phases: waiting for its request head,
//   reading its body, answered; a connection kept alive after its answer
//   (keep_alive above zero) then waits, idle, for its next head. At most
//   max_connections are held; when one more opens, the OLDEST connection
//   still waiting for its first head is named for closing, or if there is
//   none the one idle the longest. A real client (a Prometheus scrape,
//   volleyctl) sends its head within microseconds of connecting, so it is
//   never the oldest silent one: the cap costs idle and slowloris connections
//   their place, never a real request. And a client that keeps its connection
//   (Prometheus does) never meets the flood at all: a flood that fills the
//   listen backlog faster than the server drains it makes a NEW connection's
//   SYN wait for its retransmission (1 s), longer than a 1 s scrape timeout.
//   If every other connection has sent its head and none is idle, none is
//   named (the new one is allowed over the cap; the server's own hard limit
//   is above it).
//
//   Deadlines: request_timeout from accept to a complete head (an inactivity
//   timeout alone would let a slowloris that sends a byte every few seconds
//   hold its connection for ever), and request_timeout again from the head to
//   a complete body. Once answered, the server's inactivity timeout is what
//   bounds the write. Idle, keep_alive from the end of the answer until the
//   next head is complete (so a slowloris that sent one real request is cut
//   there too).
//
// CONTRACT
//   Not thread-safe: the server calls it under one mutex, and shuts a named
//   descriptor down before it releases that mutex, so the descriptor cannot
//   have been closed and reused in between (the server removes a connection,
//   under the same mutex, before it closes the descriptor). A connection is
//   named at most once: it is forgotten when named; later calls for its id are
//   ignored. Ids are the caller's (a connection's address) and must be unique
//   among open connections.
//
// BOUNDS
//   One entry per open connection (the server bounds those); every call is
//   O(1) but Expired, which is O(connections it names).
//
// DIAGNOSTICS
//   None: the policy's decisions are its return values.
#ifndef VOLLEY_ENGINE_HTTP_CONNECTION_GUARD_H_
#define VOLLEY_ENGINE_HTTP_CONNECTION_GUARD_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"

namespace volley::http {

class ConnectionGuard {
 public:
  using Id = uintptr_t;

  // `max_connections` (at least 1) held at once before the oldest silent one
  // is named; `request_timeout` for the head, and again for the body;
  // `keep_alive` for an idle connection's next head.
  ConnectionGuard(size_t max_connections, absl::Duration request_timeout,
                  absl::Duration keep_alive = absl::ZeroDuration());

  // Opened - connection `id` (descriptor `fd`) was accepted at `now`. Returns
  // the descriptor to shut down when over the cap: the oldest connection still
  // waiting for its head, never `id` itself.
  std::optional<int> Opened(Id id, int fd, absl::Time now);
  // HeadReceived - `id` sent a complete request head at `now` (its first, or
  // the next one on a connection kept alive).
  void HeadReceived(Id id, absl::Time now);
  // Answered - `id` has its answer; from now on only the server's inactivity
  // timeout applies.
  void Answered(Id id);
  // Idle - `id`'s answer is sent at `now` and the connection is kept for a
  // next request.
  void Idle(Id id, absl::Time now);
  // Closed - `id` is gone (for whatever reason).
  void Closed(Id id);
  // Expired - the descriptors of connections past their deadline at `now`.
  std::vector<int> Expired(absl::Time now);

  // Connections held (named ones excluded), those of them still silent, and
  // those idle between requests.
  size_t size() const { return connections_.size(); }
  size_t waiting_for_head() const { return waiting_head_.size(); }
  size_t idle() const { return idle_.size(); }
  // Connections named so far, by cause.
  uint64_t evicted() const { return evicted_; }
  uint64_t expired() const { return expired_; }

 private:
  enum class Phase { kHead, kBody, kAnswered, kIdle };
  struct Waiting {
    Id id;
    int fd;
    absl::Time deadline;
  };
  struct Entry {
    Phase phase;
    int fd;
    std::list<Waiting>::iterator at;  // in the phase's list; unused when answered
  };
  std::list<Waiting>* ListOf(Phase phase);
  // MoveTo - take `it` out of its phase's list and put it in `phase`'s, with
  // `deadline` (none for kAnswered).
  void MoveTo(absl::flat_hash_map<Id, Entry>::iterator it, Phase phase, absl::Time deadline);
  // Forget - drop `it` from the table and its list; returns its descriptor.
  int Forget(absl::flat_hash_map<Id, Entry>::iterator it);

  const size_t max_connections_;
  const absl::Duration request_timeout_;
  const absl::Duration keep_alive_;
  absl::flat_hash_map<Id, Entry> connections_;
  // In accept order, which is deadline order (one timeout for all); likewise
  // reading_body_ in head order and idle_ in answer order.
  std::list<Waiting> waiting_head_;
  std::list<Waiting> reading_body_;
  std::list<Waiting> idle_;
  uint64_t evicted_ = 0;
  uint64_t expired_ = 0;
};

}  // namespace volley::http

#endif  // VOLLEY_ENGINE_HTTP_CONNECTION_GUARD_H_
