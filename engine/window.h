// window.h - a shard's delivery window: its jobs, their queue scans, and the refill
//
// SYNOPSIS
//   DeliveryWindow window(place, queue, &composer);
//   if (Job* changed = window.Load(record).value()) Withdraw(changed);  // paused, cancelled
//   window.Refill(now, [&](Work* w, const absl::Status& decoded) { Route(w); });
//   window.Release(w);                    // its outcome is recorded
//   window.ForgetCommitted(unit.keys);    // and written
//
// DESCRIPTION
//   The window bounds the recipients a shard holds at once (its share of
//   [delivery] window). Refill takes due recipients from the queue partitions
//   the shard owns, job by job: a job of a higher priority first, jobs of one
//   priority taking turns (each refill starts one job further on), in rounds of
//   at most kTakeBatch per partition, until the window is full or nothing more
//   is due. Each recipient taken is handed to the caller at once (to be routed,
//   cancelled, or bounced when its queue entry does not decode).
//
//   A scan that comes up short (fewer due than it asked for) is not scanned
//   again until something in its partition can be due: the next key's due time
//   (read in the same seek, Queue::TakeDueAndNext), brought forward when a
//   written outcome batch moved a recipient there (a deferral,
//   Queue::TakeRequeued, read at each refill); with nothing after it, the last
//   of its recipients settling (written: ForgetCommitted) wakes it once, to
//   find the partition empty. So a window holding a whole campaign costs no
//   seek per partition per refill while it is sent (queue/README.md, "Taking
//   due recipients"). A job with nothing left on any shard, every outcome
//   written, is marked done by the shard finishing last (JobBoard).
//
//   A key taken stays in its job's `taken` set until the batch holding its
//   outcome is written (ForgetCommitted): a scan from the job's start (resume,
//   cancel) passes over it, so a recipient is never taken twice. The window
//   caches no queue entry: the queue stays the truth, and what a crash loses
//   is only when to look.
//
//   A failed refill (no descriptor, EIO, RocksDB holding writes) is logged once
//   per episode and tried again with a doubling wait up to kRefillRetryMax;
//   corruption (DataLoss) is returned, for an operator.
//
// BOUNDS
//   place.window Works; kTakeBatch per scan; Job::taken holds a key (18 bytes
//   inline) per recipient taken and not yet written, the window's worth plus
//   the committer's batch at most.
#ifndef VOLLEY_ENGINE_WINDOW_H_
#define VOLLEY_ENGINE_WINDOW_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/boards.h"
#include "engine/compose.h"
#include "engine/work.h"
#include "queue/queue.h"

namespace volley::engine {

// Recipients taken from one job per scan: small enough that jobs share the
// window fairly, large enough that a scan is worth its seek.
inline constexpr size_t kTakeBatch = 512;
// Refills of the window from the queue are at least this far apart: each costs
// a RocksDB seek per job.
inline constexpr absl::Duration kRefillInterval = absl::Milliseconds(10);
// The longest wait between refills while the queue keeps failing them.
inline constexpr absl::Duration kRefillRetryMax = absl::Seconds(5);

class DeliveryWindow {
 public:
  // on_taken(w, decoded): w was taken from the queue; `decoded` says whether its
  // entry decoded (when not, w->rcpt is empty and w must be bounced).
  using OnTaken = std::function<void(Work* w, const absl::Status& decoded)>;

  DeliveryWindow(const ShardPlace& place, queue::Queue* queue, Composer* composer);
  ~DeliveryWindow();

  // Load - a job the queue has (at start, or new from intake, or changed by a
  // control command). Returns the job when it was just paused or cancelled:
  // its recipients waiting in ready lists must be withdrawn. Known jobs are
  // updated; loading or finished ones are ignored.
  absl::StatusOr<Job*> Load(const queue::JobRecord& record);

  // Refill - take due recipients into the window (see DESCRIPTION). A failure
  // other than corruption is logged and retried later: OK is returned.
  absl::Status Refill(absl::Time now, const OnTaken& on_taken);
  // RefillDue - the last refill was long enough ago, the window has room, and
  // no failure asks to wait.
  bool RefillDue(absl::Time now) const {
    return now - last_refill_ >= kRefillInterval && now >= retry_at_ && in_flight_ < window_;
  }
  // NextRefillSoon - recipients may still be due (the window filled, or a scan
  // hit its batch size) and there is room: when to refill rather than wait for
  // the tick; InfiniteFuture otherwise.
  absl::Time NextRefillSoon() const {
    return more_due_ && in_flight_ < window_ ? last_refill_ + kRefillInterval
                                             : absl::InfiniteFuture();
  }

  // Release - w's outcome is recorded (or it goes back to the queue untouched):
  // it leaves the window. Returns its (job number, key), which stays taken until
  // ForgetCommitted.
  std::pair<uint32_t, std::string> Release(Work* w);
  // ForgetCommitted - after a batch is written, its keys leave Job::taken.
  void ForgetCommitted(const std::vector<std::pair<uint32_t, std::string>>& keys);

  size_t in_flight() const { return in_flight_; }
  const std::map<uint32_t, std::unique_ptr<Job>>& jobs() const { return jobs_; }

 private:
  absl::Status TakeAndMarkDone(absl::Time now, const OnTaken& on_taken);
  absl::StatusOr<size_t> TakeFromJob(Job* job, PartitionScan* scan, size_t want, absl::Time now,
                                     const OnTaken& on_taken);
  // ScanIdle - `scan` came up short with nothing after its cursor and nothing
  // of it unsettled: find whether anything is left before the cursor, or that
  // it is empty.
  absl::Status ScanIdle(Job* job, PartitionScan* scan);
  // WakeRequeued - bring forward the scans of partitions a deferral was
  // written into since the last refill (Queue::TakeRequeued).
  void WakeRequeued();

  const ShardPlace place_;
  const size_t window_;
  queue::Queue* queue_;
  Composer* composer_;
  std::vector<uint16_t> owned_;  // the queue partitions this shard scans
  // What one TakeDue returned, before each entry moves into its Work: kept
  // between scans so that its room (kTakeBatch entries at most) is allocated
  // once, not grown entry by entry at every scan.
  std::vector<queue::QueuedRecipient> take_buffer_;
  std::map<uint32_t, std::unique_ptr<Job>> jobs_;  // by job number
  // Jobs this shard finished last, to be marked done in the queue; kept until
  // written (a failed write is tried again at the next refill).
  std::deque<queue::JobRecord> jobs_to_mark_done_;
  size_t in_flight_ = 0;
  uint32_t refill_from_ = 0;  // the job number the next refill starts at
  bool more_due_ = false;
  absl::Time last_refill_ = absl::InfinitePast();
  // A refill failed: the next one waits until then, the wait doubling per
  // failure up to kRefillRetryMax.
  absl::Time retry_at_ = absl::InfinitePast();
  absl::Duration retry_wait_ = absl::ZeroDuration();
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_WINDOW_H_
