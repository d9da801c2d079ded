// committer.h - writes a shard's outcomes to disk on a thread of its own
//
// SYNOPSIS
//   Committer committer(queue, log);
//   RETURN_IF_ERROR(committer.Start());
//   // each loop turn, when !committer.busy():
//   committer.Submit({std::move(log_bytes), std::move(batch), std::move(keys)});
//   // when committer.event_fd() is readable (the shard reads it through its ring):
//   if (std::optional<Committer::Unit> done = committer.TakeDone()) ...
//
// DESCRIPTION
//   A unit is one loop turn's outcomes: their delivery-log lines and the queue
//   batch that removes or reschedules their recipients. The thread writes the
//   lines to the delivery log (one write, rotating when due), stores the log's
//   position in the batch and applies the batch to the queue: log first, then
//   queue, the order crash recovery relies on (engine.cc's invariants). Neither
//   write can stall the shard's loop: a slow disk, an fsync (sync_outcomes) or a
//   RocksDB write stall holds only this thread while the shard goes on with its
//   connections.
//
//   A queue that refuses the write for lack of room (ResourceExhausted) is asked
//   to recover and tried again every kStallRetry, the unit held, until it goes
//   through or the committer stops; stalled() says so meanwhile (the shard takes
//   no new work). Any other failure ends the unit with its status.
//
// LIMITS
//   One unit at a time: Submit only when !busy(). The shard's window bounds a
//   unit, so memory is bounded by two turns of outcomes.
//
// CONTRACT
//   Submit, TakeDone, busy, CommitNow: the shard's thread. CommitNow is for
//   before Start and after Stop (start-up replay, the last turn at shutdown).
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

  Committer(queue::Queue* queue, metrics::DeliveryLog* log);
  ~Committer();  // Stop()
  Committer(const Committer&) = delete;
  Committer& operator=(const Committer&) = delete;

  absl::Status Start();
  // Stop - wait for the unit under way (a stalled one gives up, ResourceExhausted)
  // and end the thread; TakeDone then returns it.
  void Stop();

  int event_fd() const { return event_fd_; }
  bool busy() const { return busy_; }
  bool stalled() const { return stalled_.load(std::memory_order_relaxed); }

  void Submit(Unit unit);
  // TakeDone - the unit the thread finished, once; nullopt while under way.
  std::optional<Unit> TakeDone();
  // CommitNow - the same work on the caller's thread (no thread running).
  void CommitNow(Unit* unit);

 private:
  void Loop();

  queue::Queue* queue_;
  metrics::DeliveryLog* log_;
  int event_fd_ = -1;
  bool busy_ = false;  // the shard's view: submitted and not yet taken back
  std::atomic<bool> stalled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                // guarded by mu_
  std::optional<Unit> todo_, done_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_COMMITTER_H_
