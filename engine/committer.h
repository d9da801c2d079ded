// committer.h - writes the shards' outcomes to disk on a thread of its own
//
// SYNOPSIS
//   Committer committer(queue, log, shards);          // one lane per shard
//   RETURN_IF_ERROR(committer.Start());
//   // each loop turn of shard `lane`, when !committer.busy(lane):
//   committer.Submit({std::move(log_bytes), std::move(batch), std::move(keys)}, lane);
//   // when committer.event_fd(lane) is readable (the shard reads it through its ring):
//   if (std::optional<Committer::Unit> done = committer.TakeDone(lane)) ...
//
// DESCRIPTION
//   A unit is one loop turn's outcomes: their delivery-log lines and the queue
//   batch that removes or reschedules their recipients. The thread writes the
//   lines to the delivery log (one write, rotating when due), stores the log's
//   position in the batch and applies the batch to the queue: log first, then
//   queue, the order crash recovery relies on (engine/shard.h, invariants). Neither
//   write can stall a shard's loop: a slow disk, an fsync (sync_outcomes) or a
//   RocksDB write stall holds only this thread while the shards go on with their
//   connections.
//
//   Every shard has a lane: its own one-unit mailbox and eventfd. One thread
//   serves them all, a unit at a time in turn, so the delivery log stays one
//   file written by one writer and the position stored with each unit covers
//   every line before it (a position per shard would make crash replay a merge
//   of several logs). The hand-over is one mutex-guarded move per loop turn per
//   shard, never per message.
//
// WRITE ERRORS
//   A write that fails for any reason but corruption (a full disk, no
//   descriptor left, EIO: issue 16) holds the unit and is tried again, first
//   after kRetryFirst, the wait doubling up to kRetryMax, until it goes through
//   or the committer stops. Before each try of the queue's write the queue is
//   asked to recover (Queue::Recover: RocksDB refuses every write after a
//   failed one until it resumes). stalled() says so meanwhile: the shards take
//   no new work, which bounds what piles up behind. One line in volleyd's log
//   when a stall begins, naming the write and its error, and one when it ends.
//   Nothing accepted is lost and nothing is written twice: RocksDB applies a
//   batch whole or not at all, so the same batch is applied again; what a failed
//   delivery-log flush did not write stays in the log's buffer, and the next
//   flush writes that rest and no more (metrics/delivery_log.h). Corruption
//   (DataLoss, from the write or from Recover) ends the unit with that status at
//   once: the shard stops volleyd with it, since a queue that cannot be trusted
//   must not go on sending. When Recover says RocksDB cannot resume in this
//   process (Unavailable: a fatal error, queue.h), the committer says so once
//   and goes on trying: a restart of volleyd clears it, and loses nothing.
//
// LIMITS
//   One unit per lane at a time: Submit only when !busy(lane). A shard's window
//   bounds a unit, so memory is bounded by two turns of outcomes per shard. A
//   retried write waits at most kRetryMax between tries.
//
// CONTRACT
//   Submit, TakeDone, WaitDone, busy of a lane: that lane's shard thread only.
//   CommitNow is for when no thread runs (before Start, after Stop).
#ifndef VOLLEY_ENGINE_COMMITTER_H_
#define VOLLEY_ENGINE_COMMITTER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/reactor/mailbox.h"
#include "metrics/delivery_log.h"
#include "queue/queue.h"

namespace volley::engine {

class Committer {
 public:
  // A failed write is tried again after kRetryFirst, then after twice as long
  // each time, never more than kRetryMax apart: soon after a brief shortage
  // of descriptors, and without a try (and a RocksDB recovery) every 100 ms for
  // an hour of a full disk.
  static constexpr absl::Duration kRetryFirst = absl::Milliseconds(100);
  static constexpr absl::Duration kRetryMax = absl::Seconds(5);

  struct Unit {
    std::string log_bytes;  // whole delivery-log records
    std::unique_ptr<queue::Queue::OutcomeBatch> batch;
    std::vector<std::pair<uint32_t, std::string>> keys;  // (job, key) released this turn
    absl::Status status;                                  // set when done
  };

  Committer(queue::Queue* queue, metrics::DeliveryLog* log, size_t lanes = 1);
  ~Committer();  // Stop()
  Committer(const Committer&) = delete;
  Committer& operator=(const Committer&) = delete;

  absl::Status Start();
  // Stop - wait for the units under way (a stalled one gives up,
  // ResourceExhausted) and end the thread; TakeDone then returns them.
  void Stop();
  // GiveUpWhenStalled - from now on a unit whose write fails is tried once more
  // and then returned ResourceExhausted (whatever the error, but DataLoss)
  // instead of retried: a shard that is stopping must not wait for the disk
  // forever, and counts those outcomes as not recorded. Any thread.
  void GiveUpWhenStalled();

  int event_fd(size_t lane = 0) const {
    return lanes_[lane].event ? lanes_[lane].event->fd() : -1;
  }
  bool busy(size_t lane = 0) const { return lanes_[lane].busy; }
  // stalled - a write of the delivery log or the queue failed and is being
  // retried now (WRITE ERRORS). Any thread: the shards and the metrics read it.
  bool stalled() const { return stalled_.load(std::memory_order_relaxed); }

  void Submit(Unit unit, size_t lane = 0);
  // TakeDone - the unit the thread finished, once; nullopt while under way.
  std::optional<Unit> TakeDone(size_t lane = 0);
  // WaitDone - TakeDone, blocking until the lane's unit is finished; nullopt
  // when nothing was submitted. For stopping, not for the loop.
  std::optional<Unit> WaitDone(size_t lane = 0);
  // CommitNow - the same work on the caller's thread (no thread running). A
  // failed write is retried as WRITE ERRORS says; after Stop (or
  // GiveUpWhenStalled) it is tried once more and the unit comes back
  // ResourceExhausted.
  void CommitNow(Unit* unit);

 private:
  // A lane is a one-unit mailbox of its own rather than a reactor::Mailbox:
  // its shard's busy flag and WaitDone's condition variable go with it.
  struct Lane {
    std::optional<reactor::EventFd> event;  // set by Start
    bool busy = false;  // its shard's view: submitted and not yet taken back
    std::optional<Unit> todo, done;  // guarded by mu_
  };
  void Loop();
  // WriteUntilDone - `write` (the log's flush, or the queue's apply), tried
  // again as WRITE ERRORS says until it succeeds, fails with DataLoss, or the
  // committer stops or gives up (then ResourceExhausted).
  template <typename Write>
  absl::Status WriteUntilDone(const char* what, bool recover_queue, Write write);
  void StallBegins(const char* what, const absl::Status& st);
  void StallEnds();

  queue::Queue* queue_;
  metrics::DeliveryLog* log_;
  std::vector<Lane> lanes_;
  std::atomic<bool> stalled_{false};
  // The stall under way: when it began and the tries that failed. Committer
  // thread only (or CommitNow's caller).
  absl::Time stalled_since_;
  uint64_t failed_tries_ = 0;
  bool restart_noted_ = false;  // Recover said only a restart helps: said once
  std::mutex mu_;
  std::condition_variable cv_;       // to the thread: work, or stop
  std::condition_variable done_cv_;  // to WaitDone: a unit finished
  bool stop_ = false;                // guarded by mu_
  bool give_up_ = false;             // guarded by mu_
  std::thread thread_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_COMMITTER_H_
