// NAME
//   greylist.h - volley-sink's greylisting table: first attempts of a (sender,
//   recipient) pair are refused until a delay has passed
//
// SYNOPSIS
//   #include "engine/smtpd/greylist.h"
//
//   Greylist g(Greylist::kDefaultMaxEntries);
//   if (!g.Pass(sender, recipient, absl::Seconds(2), now)) ...;  // 451 4.7.1
//
// DESCRIPTION
//   Pass() records the first time it sees a pair and refuses it until `delay`
//   has passed since; from then on the pair passes for as long as it stays in
//   the table. Addresses are compared in any case. The table reads no clock:
//   the caller passes `now` (the server its monotonic clock, tests any time).
//
// CONTRACT
//   Thread-safe: one table per server, shared by the sessions of every shard
//   thread. A mutex guards it; greylisting is a fault profile, not the hot path,
//   so a RCPT under it may wait for another shard's.
//
// BOUNDS
//   At most max_entries pairs (each a copy of both addresses). When full, the
//   oldest pair goes first, so a pair evicted while it waits is greylisted again
//   from the start: with more pairs in flight than max_entries, greylisting
//   never lets them through.
#ifndef VOLLEY_ENGINE_SMTPD_GREYLIST_H_
#define VOLLEY_ENGINE_SMTPD_GREYLIST_H_

#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"

namespace volley::smtpd {

class Greylist {
 public:
  // Pairs remembered. Default: 100000 (a few MB).
  static constexpr size_t kDefaultMaxEntries = 100000;

  explicit Greylist(size_t max_entries = kDefaultMaxEntries);

  Greylist(const Greylist&) = delete;
  Greylist& operator=(const Greylist&) = delete;

  // Pass - whether the pair may pass at `now`; the first sight is recorded.
  bool Pass(std::string_view sender, std::string_view recipient, absl::Duration delay,
            absl::Time now);

  size_t size() const;

 private:
  const size_t max_entries_;
  mutable std::mutex mu_;
  // Guarded by mu_.
  absl::flat_hash_map<std::string, absl::Time> first_seen_;  // key: "sender\0rcpt"
  std::deque<std::string> order_;                            // oldest first
};

}  // namespace volley::smtpd

#endif  // VOLLEY_ENGINE_SMTPD_GREYLIST_H_
