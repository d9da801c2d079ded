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
//   queue, the order crash recovery relies on (engine.cc's invariants). Neither
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
//   A queue that refuses the write for lack of room (ResourceExhausted) is asked
//   to recover and tried again every kStallRetry, the unit held, until it goes
//   through or the committer stops; stalled() says so meanwhile (the shard takes
//   no new work). Any other failure ends the unit with its status.
//
// LIMITS
//   One unit per lane at a time: Submit only when !busy(lane). A shard's window
//   bounds a unit, so memory is bounded by two turns of outcomes per shard.
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
#include "metrics/delivery_log.h"
#include "queue/queue.h"

namespace volley::engine {

class Committer {
 public:
  static constexpr absl::Duration kStallRetry = absl::Milliseconds(100);

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
  // GiveUpWhenStalled - from now on a unit the queue refuses for lack of room is
  // tried once more and then returned ResourceExhausted instead of retried: a
  // shard that is stopping must not wait for the disk forever. Any thread.
  void GiveUpWhenStalled();

  int event_fd(size_t lane = 0) const { return lanes_[lane].event_fd; }
  bool busy(size_t lane = 0) const { return lanes_[lane].busy; }
  bool stalled() const { return stalled_.load(std::memory_order_relaxed); }

  void Submit(Unit unit, size_t lane = 0);
  // TakeDone - the unit the thread finished, once; nullopt while under way.
  std::optional<Unit> TakeDone(size_t lane = 0);
  // WaitDone - TakeDone, blocking until the lane's unit is finished; nullopt
  // when nothing was submitted. For stopping, not for the loop.
  std::optional<Unit> WaitDone(size_t lane = 0);
  // CommitNow - the same work on the caller's thread (no thread running).
  void CommitNow(Unit* unit);

 private:
  struct Lane {
    int event_fd = -1;
    bool busy = false;  // its shard's view: submitted and not yet taken back
    std::optional<Unit> todo, done;  // guarded by mu_
  };
  void Loop();

  queue::Queue* queue_;
  metrics::DeliveryLog* log_;
  std::vector<Lane> lanes_;
  std::atomic<bool> stalled_{false};
  std::mutex mu_;
  std::condition_variable cv_;       // to the thread: work, or stop
  std::condition_variable done_cv_;  // to WaitDone: a unit finished
  bool stop_ = false;                // guarded by mu_
  bool give_up_ = false;             // guarded by mu_
  std::thread thread_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_COMMITTER_H_
