// work.h - a recipient in flight and the job it belongs to, as a shard holds them
//
// DESCRIPTION
//   A recipient taken from the queue (engine/window.h) becomes a Work and is in
//   exactly one place until its outcome is recorded (engine/outcomes.h): waiting
//   for its domain's DNS plan (engine/routing.h), a destination's ready list, or
//   a connection's transaction (engine/shard.h). The Job is the shard's view of
//   a queued job: its parsed header and template, and where the shard is in each
//   of the queue partitions it owns.
//
// BOUNDS
//   Works: the shard's share of [delivery] window at most.
#ifndef VOLLEY_ENGINE_WORK_H_
#define VOLLEY_ENGINE_WORK_H_

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/time/time.h"
#include "engine/compose.h"
#include "base/status.h"
#include "engine/config.h"
#include "queue/job.h"
#include "queue/queue.h"
#include "queue/template.h"

namespace volley::engine {

// TakenKey - a recipient's queue key (queue.h: kRecipientKeyBytes), held
// inline: Job::taken holds one per recipient in the window, and as a
// std::string every one of them would be a heap block of its own (18 bytes is
// past libstdc++'s 15-byte inline buffer). The set is looked up by the
// std::string keys the rest of the engine carries (heterogeneous lookup).
class TakenKey {
 public:
  explicit TakenKey(std::string_view key) {
    VOLLEY_CHECK(key.size() == bytes_.size(), "a queue key of another size than the queue's");
    std::copy(key.begin(), key.end(), bytes_.begin());
  }
  std::string_view view() const { return std::string_view(bytes_.data(), bytes_.size()); }

 private:
  std::array<char, queue::kRecipientKeyBytes> bytes_;
};
struct TakenKeyHash {
  using is_transparent = void;
  size_t operator()(std::string_view key) const { return absl::Hash<std::string_view>{}(key); }
  size_t operator()(const TakenKey& key) const { return (*this)(key.view()); }
};
struct TakenKeyEq {
  using is_transparent = void;
  static std::string_view View(std::string_view key) { return key; }
  static std::string_view View(const TakenKey& key) { return key.view(); }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return View(a) == View(b);
  }
};

// PartitionScan - where the shard is in one partition of one job (queue.h).
struct PartitionScan {
  uint16_t partition = 0;
  std::string cursor;  // last key taken; the next scan starts after it
  // Nothing of it is due before then (it is not scanned until then): the due
  // time of the first key after the cursor when the last scan came up short,
  // brought forward by a deferral into the partition (Queue::TakeRequeued);
  // InfiniteFuture when nothing is after the cursor and some of what was
  // taken is unsettled (the last one settling wakes it).
  absl::Time idle_until = absl::InfinitePast();
  // No recipient of the job is left in it (nor taken from it): never scanned again.
  bool empty = false;
  size_t in_flight = 0;  // taken from it and not finished
  // Taken from it and not yet written (ForgetCommitted): in flight, or
  // finished in a batch the committer has not written. While any is, a
  // deferral may still land in the partition, so it is never found empty.
  size_t unsettled = 0;
};

struct Job {
  queue::JobRecord record;
  queue::JobHeader header;
  // The domain of header.from, lower case: the suppression list's scope.
  std::string from_domain;
  std::unique_ptr<queue::Template> tpl;
  // The partitions this shard owns, scanned in turn (next_scan first) so that,
  // when the window is short, destinations of one job share it.
  std::vector<PartitionScan> scans;
  size_t next_scan = 0;
  // The message (and MAIL FROM) is the same for every recipient: recipients of
  // one domain may share a transaction.
  bool shared_message = false;
  // What Composer worked out for the job: added fields, VERP, DKIM signers.
  std::unique_ptr<JobPlan> plan;
  size_t in_flight = 0;
  // The largest message composed for the job so far: what its next one is
  // expected to hold against [delivery] max_message_bytes_in_flight.
  uint64_t largest_message = 0;
  // Keys taken from the queue whose outcome is not yet committed: in a ready
  // list, in a transaction, or finished in the batch not yet written. A scan
  // from the job's start (resume, cancel) passes over them, so a recipient is
  // never taken twice, whatever the cursor says.
  absl::flat_hash_set<TakenKey, TakenKeyHash, TakenKeyEq> taken;

  bool cancelled() const { return record.state == queue::JobState::kCancelled; }
};

struct Work {
  queue::QueuedRecipient entry;
  queue::Recipient rcpt;
  Job* job = nullptr;
  PartitionScan* scan = nullptr;  // of job, the partition it was taken from
  // The destination's retry policy, and when the recipient expires under it:
  // the job's queued_at + max_age, or the job's expires if sooner.
  const RetryConfig* retry = nullptr;
  absl::Time deadline = absl::InfiniteFuture();
};

inline absl::Time ExpiryOf(const Job& job, const RetryConfig& retry) {
  const absl::Time by_age = job.record.queued_at + retry.max_age;
  return job.header.expires ? std::min(by_age, *job.header.expires) : by_age;
}

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_WORK_H_
