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
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "engine/compose.h"
#include "engine/config.h"
#include "queue/job.h"
#include "queue/queue.h"
#include "queue/template.h"

namespace volley::engine {

// PartitionScan - where the shard is in one partition of one job (queue.h).
struct PartitionScan {
  uint16_t partition = 0;
  std::string cursor;  // last key taken; the next scan starts after it
  // Nothing of it is due before then (it is not scanned until then).
  absl::Time idle_until = absl::InfinitePast();
  // No recipient of the job is left in it (nor taken from it): never scanned again.
  bool empty = false;
  size_t in_flight = 0;  // taken from it and not finished
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
  absl::flat_hash_set<std::string> taken;

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
