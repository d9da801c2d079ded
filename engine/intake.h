// intake.h - the intake thread: watch the spool, stream jobs into the queue
//
// DESCRIPTION
//   Runs beside the shard so that taking in a million-line job never stalls
//   delivery. It scans incoming/ at start and on every inotify event (and once
//   a second, in case an event was missed), takes each file in (queue/spool.h),
//   and hands the id of each job that became ready to the shard through a
//   mailbox whose eventfd the shard's ring reads.
//
//   A queue or disk error (disk full, a RocksDB write error) pauses intake: the
//   file stays in incoming/, the reason is logged once (and again every
//   kPauseReminder while it lasts), and intake tries again every kPausedRetry.
//   Free space below the floor (queue::FreeSpaceFloor, the config's
//   [queue] min_free_space) pauses it the same way before anything is written,
//   so that delivery's outcome writes keep the room left. Before each retry it
//   asks the queue to recover from a stopped state (Queue::Recover). Delivery of
//   what is queued goes on meanwhile: nothing here blocks the shard.
#ifndef VOLLEY_ENGINE_INTAKE_H_
#define VOLLEY_ENGINE_INTAKE_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "metrics/metrics.h"
#include "queue/job.h"
#include "queue/queue.h"
#include "queue/spool.h"

namespace volley::engine {

// ReadyJobs - the mailboxes from the intake thread (and the admin API) to the
// shards: a job id pushed reaches every shard, each through its own eventfd,
// since every shard owns a share of every job's partitions.
class ReadyJobs {
 public:
  explicit ReadyJobs(size_t shards = 1);
  ~ReadyJobs();
  ReadyJobs(const ReadyJobs&) = delete;
  ReadyJobs& operator=(const ReadyJobs&) = delete;
  int event_fd(size_t shard = 0) const { return boxes_[shard].event_fd; }
  void Push(const std::string& job_id);
  std::vector<std::string> TakeAll(size_t shard = 0);

 private:
  struct Box {
    int event_fd = -1;
    std::vector<std::string> jobs;  // guarded by mu_
  };
  std::mutex mu_;
  std::vector<Box> boxes_;
};

class IntakeThread {
 public:
  // floor: the free space intake leaves alone, on the spool's filesystem and
  // on those of floor.paths (the queue's folder).
  // metrics: counted into, when not null (docs/metrics.md, volley_intake_*).
  IntakeThread(queue::Spool spool, queue::Queue* queue, queue::JobLimits limits,
               ReadyJobs* ready, queue::FreeSpaceFloor floor,
               metrics::IntakeMetrics* metrics = nullptr);
  ~IntakeThread();  // stops and joins
  void Start();

  // While paused: how often intake tries again, and how often it says it is
  // still paused (a stuck intake must not look like an idle one).
  static constexpr int kPausedRetryMs = 5000;
  static constexpr absl::Duration kPauseReminder = absl::Minutes(5);

 private:
  void Loop();
  void ScanOnce();
  // Pause - intake cannot go on: log why, once, then every kPauseReminder.
  void Pause(const absl::Status& why, const std::string& name);
  void Resumed();
  queue::Spool spool_;
  queue::Queue* queue_;
  queue::JobLimits limits_;
  ReadyJobs* ready_;
  metrics::IntakeMetrics* metrics_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  bool paused_ = false;
  absl::Time paused_since_;
  absl::Time last_reminder_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_INTAKE_H_
