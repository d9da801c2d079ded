// queue_summary.h - the queue in numbers: counts by state and by age, like Postfix's qshape
//
// SYNOPSIS
//   QueueSummaryFilter filter{.domain = "example.test", .job = ""};
//   ASSIGN_OR_RETURN(QueueSummary s, SummarizeQueue(*queue, jobs, filter, absl::Now()));
//   std::string json = QueueSummaryJson(s, in_flight, absl::Now());
//
// DESCRIPTION
//   Walks the recipients of every job in `jobs` (partition by partition, in
//   pages of kQueueSummaryPage, with Queue::TakeDue and no due limit) and
//   counts each as:
//     ready      due now, never tried yet
//     deferred   tried at least once (waiting for its retry, or due for it now)
//     scheduled  due later and never tried (a job's send_after)
//   and in one age class (job_rates.h, QueueAgeBucket): its age is the time
//   since its job was queued, as qshape counts from a message's arrival. The
//   oldest such time and the earliest due time are kept.
//
//   With a domain, only recipients whose address's domain is it (ASCII case
//   ignored) count; every recipient is still read, since a recipient's
//   partition comes from its route, not its domain. With a job, only that
//   job's recipients are read.
//
//   In flight is not the queue's to know (a recipient in a transaction is still
//   a queued key): QueueSummaryJson takes it from the shards (DestinationStates).
//
// BOUNDS
//   At most kQueueSummaryMaxScan recipients are read; past it the summary is
//   marked truncated and counts what was read. Cost: one RocksDB iteration
//   over the keys read, about a microsecond each, so a full scan is about a
//   second at the bound, on the admin API's thread (never a shard's).
//
// DIAGNOSTICS
//   The queue's errors, as Queue::TakeDue returns them. A recipient that cannot
//   be decoded (DataLoss) is counted, without its domain.
#ifndef VOLLEY_ENGINE_QUEUE_SUMMARY_H_
#define VOLLEY_ENGINE_QUEUE_SUMMARY_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/job_rates.h"
#include "queue/queue.h"

namespace volley::engine {

// Recipients read by one summary at most. Default: 1,000,000.
inline constexpr uint64_t kQueueSummaryMaxScan = 1'000'000;
// Recipients read per TakeDue call. Default: 1024.
inline constexpr size_t kQueueSummaryPage = 1024;

struct QueueSummaryFilter {
  std::string domain;  // "" for every domain
  std::string job;     // job id; "" for every job
};

struct QueueSummary {
  uint64_t ready = 0;
  uint64_t deferred = 0;
  uint64_t scheduled = 0;
  std::array<uint64_t, kQueueAgeBuckets> ages{};
  std::optional<absl::Time> oldest_queued_at;
  std::optional<absl::Time> next_due;
  uint64_t scanned = 0;
  bool truncated = false;
  uint64_t total() const { return ready + deferred + scheduled; }
};

// SummarizeQueue - see DESCRIPTION. `jobs` are the queue's (Queue::ListJobs);
// those loading, done or not the filter's job are skipped.
absl::StatusOr<QueueSummary> SummarizeQueue(queue::Queue& queue,
                                            const std::vector<queue::JobRecord>& jobs,
                                            const QueueSummaryFilter& filter, absl::Time now,
                                            uint64_t max_scan = kQueueSummaryMaxScan);

// QueueSummaryJson - the GET /queue answer (engine/admin.h).
std::string QueueSummaryJson(const QueueSummary& summary, std::optional<uint64_t> in_flight,
                             absl::Time now);

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_QUEUE_SUMMARY_H_
