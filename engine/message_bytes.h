// message_bytes.h - a shard's bound on the bytes of rendered messages its connections hold
//
// SYNOPSIS
//   MessageBytes<Destination*> bytes(place.max_message_bytes);  // 0: no bound
//
//   if (!bytes.MayStart(d, expected)) { bytes.Wait(d); ... }  // before composing
//   ... compose: the message has `size` bytes ...
//   if (!bytes.Fits(size)) { ... put it back, bytes.Wait(d) ... }
//   bytes.Take(d, size);          // the transaction starts
//   bytes.Give(size);             // the transaction ended
//   while (auto head = bytes.Head()) ...  // who goes first once bytes are given back
//
// DESCRIPTION
//   Every connection with a transaction under way holds its rendered message
//   (the DATA or BDAT bytes, then the send buffer) until the server has
//   answered. With 100 KiB messages and thousands of connections that is
//   gigabytes, so a shard lets a transaction start only while the bytes its
//   connections hold stay within the bound: [delivery]
//   max_message_bytes_in_flight split between the shards (docs/config.md).
//
//   At the bound a transaction waits; nothing fails and nothing is deferred. A
//   destination that could start one joins a first-come, first-served line
//   (Wait) and its connection stays idle. Only the head of the line may start
//   while anyone waits (MayStart), so a large message is not passed forever by
//   small ones that keep fitting in what is left; starting (Take) gives the
//   head's turn to the next in line, and a destination with more to send joins
//   the line again at its end: round robin, one transaction a turn.
//
//   A message larger than the bound goes when nothing else is held: alone
//   (Fits is true for any size when nothing is held). The bound is then
//   exceeded by that one message, never by two.
//
//   Why a size is checked twice: the size is known only once the message is
//   composed (personalisation, added fields, signatures), and composing costs.
//   MayStart takes the caller's expectation (the largest message of the job so
//   far); after composing, Fits checks the real size, and a message that turns
//   out not to fit is put back and composed again when its turn comes. That
//   happens only when a message is larger than every one of its job before it
//   and the bound is nearly reached.
//
// CONTRACT
//   One shard's: not thread-safe. Waiter is a small handle (a pointer) that
//   stays valid while it waits. Give only what was taken.
//
// BOUNDS
//   held() <= bound() at all times, except while a single message larger than
//   the bound is held alone. The line holds each waiter once.
//
// SEE ALSO
//   engine/shard.h (AssignNext, Dispatch), docs/config.md ([delivery]
//   max_message_bytes_in_flight), docs/metrics.md (volley_message_bytes_*).
#ifndef VOLLEY_ENGINE_MESSAGE_BYTES_H_
#define VOLLEY_ENGINE_MESSAGE_BYTES_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "base/status.h"

namespace volley::engine {

template <typename Waiter>
class MessageBytes {
 public:
  // bound: bytes held at most; 0: no bound (every message fits, nobody waits).
  explicit MessageBytes(uint64_t bound) : bound_(bound) {}

  // Fits - a message of `size` bytes may be held now: within the bound, or
  // alone.
  bool Fits(uint64_t size) const { return bound_ == 0 || held_ == 0 || held_ + size <= bound_; }

  // MayStart - w may start a transaction whose message is expected to be
  // `expected` bytes: nobody waits ahead of it, and it fits.
  bool MayStart(Waiter w, uint64_t expected) const {
    return (line_.empty() || line_.front() == w) && Fits(expected);
  }

  // Wait - w joins the end of the line (once). True when it was not waiting.
  bool Wait(Waiter w) {
    if (!waiting_.insert(w).second) return false;
    line_.push_back(w);
    return true;
  }

  // Take - w's transaction starts, holding `size` bytes; w's turn (when it
  // was the head) goes to the next in line.
  void Take(Waiter w, uint64_t size) {
    ++starts_;
    held_ += size;
    peak_ = std::max(peak_, held_);
    if (!line_.empty() && line_.front() == w) PopHead();
  }

  // Give - a transaction that held `size` bytes ended.
  void Give(uint64_t size) {
    VOLLEY_CHECK(size <= held_, "MessageBytes: more bytes given back than were taken");
    held_ -= size;
  }

  // Head - the first in line, if any waits.
  std::optional<Waiter> Head() const {
    if (line_.empty()) return std::nullopt;
    return line_.front();
  }
  // Leave - the head stops waiting (it has nothing to start now: no idle
  // connection, no work, a rate limit). It joins the end again when it has.
  void LeaveHead() {
    if (!line_.empty()) PopHead();
  }
  // Forget - w stops waiting wherever it is in the line (it is going away).
  void Forget(Waiter w) {
    if (waiting_.erase(w) == 0) return;
    line_.erase(std::find(line_.begin(), line_.end(), w));
  }

  bool waiting(Waiter w) const { return waiting_.contains(w); }
  size_t line_length() const { return line_.size(); }
  uint64_t held() const { return held_; }
  // peak - the most held at once since construction.
  uint64_t peak() const { return peak_; }
  uint64_t bound() const { return bound_; }
  // starts - transactions started (Take) since construction.
  uint64_t starts() const { return starts_; }

 private:
  void PopHead() {
    waiting_.erase(line_.front());
    line_.pop_front();
  }

  const uint64_t bound_;
  uint64_t held_ = 0;
  uint64_t peak_ = 0;
  uint64_t starts_ = 0;
  std::deque<Waiter> line_;
  absl::flat_hash_set<Waiter> waiting_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_MESSAGE_BYTES_H_
