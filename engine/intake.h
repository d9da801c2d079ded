// intake.h - the intake thread: watch the spool, stream jobs into the queue
//
// DESCRIPTION
//   Runs beside the shard so that taking in a million-line job never stalls
//   delivery. It scans incoming/ at start and on every inotify event (and once
//   a second, in case an event was missed), takes each file in (queue/spool.h),
//   and hands the id of each job that became ready to the shards through
//   mailboxes (engine/reactor/mailbox.h) whose eventfds the shards' rings read.
//
//   A queue or disk error (disk full, a RocksDB write error) pauses intake: the
//   file stays in incoming/, the reason is logged once (and again every
//   kPauseReminder while it lasts), and intake tries again every kPausedRetry.
//   Free space below the floor (queue::FreeSpaceFloor, the config's
//   [queue] min_free_space) pauses it the same way before anything is written,
//   so that delivery's outcome writes keep the room left. Before each retry it
//   asks the queue to recover from a stopped state (Queue::Recover). Delivery of
//   what is queued goes on meanwhile: nothing here blocks the shard.
//
//   A file that may still be being written (queue/spool.h, WRITERS) is left
//   in incoming/ and the scan goes on to the next: one that never settles
//   blocks nothing. Each such wait is logged once per file and reason
//   ("intake: incoming/a.job: waiting: no LF at end (...)"), and so is each
//   entry that is ignored ("intake: incoming/sub: ignored: a directory"). A
//   file waiting out the settle time is logged only if it is modified again
//   meanwhile: a file renamed in waits that long every time, and is not being
//   written. A scan comes when the earliest waiting file has settled.
//
// BOUNDS
//   What has been said is kept per name in incoming/ only while the name is
//   there (IncomingNotices::Retain, every scan).
#ifndef VOLLEY_ENGINE_INTAKE_H_
#define VOLLEY_ENGINE_INTAKE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/reactor/mailbox.h"
#include "metrics/metrics.h"
#include "queue/job.h"
#include "queue/queue.h"
#include "queue/spool.h"

namespace volley::engine {

// ReadyJobs - the mailboxes from the intake thread (and the admin API) to the
// shards: a job id pushed reaches every shard, each through its own mailbox
// and eventfd, since every shard owns a share of every job's partitions.
class ReadyJobs {
 public:
  // Job ids waiting for one shard at most. A shard takes all of its ids every
  // loop turn, so only a shard that stopped taking them fills its box; an id
  // pushed to a full box is dropped with an error line naming the job: the
  // job is in the queue already, and that shard loads it when volleyd starts.
  static constexpr size_t kMaxWaitingJobs = 65536;

  explicit ReadyJobs(size_t shards = 1);
  ReadyJobs(const ReadyJobs&) = delete;
  ReadyJobs& operator=(const ReadyJobs&) = delete;
  int event_fd(size_t shard = 0) const { return boxes_[shard]->event_fd(); }
  // Push - any thread.
  void Push(const std::string& job_id);
  // TakeAll - shard `shard`'s thread.
  std::vector<std::string> TakeAll(size_t shard = 0) { return boxes_[shard]->TakeAll(); }

 private:
  std::vector<std::unique_ptr<reactor::Mailbox<std::string>>> boxes_;
};

// IncomingNotices - what intake has logged about each name in incoming/, so
// that a wait or an ignored entry is logged once per name and reason, not once
// per scan. Pure; the intake thread's memory.
class IncomingNotices {
 public:
  // Ignored - true the first time `name` is ignored as `kind`.
  bool Ignored(const std::string& name, queue::Ignored kind);
  // Waiting - true the first time `name` waits for `wait.reason`; for
  // kRecentlyModified only once it was modified again while it waited (a
  // settles_at other than the first seen).
  bool Waiting(const std::string& name, const queue::IntakeWait& wait);
  // Forget - `name` left incoming/: a file dropped again under it is new.
  void Forget(const std::string& name) { said_.erase(name); }
  // Retain - forget every name not in `present`.
  void Retain(const std::vector<std::string>& present);
  size_t size() const { return said_.size(); }

 private:
  struct Said {
    uint32_t reasons = 0;  // one bit per Ignored kind, then per WaitReason
    absl::Time first_settles_at = absl::InfinitePast();
  };
  bool First(Said& said, int bit);
  std::map<std::string, Said> said_;
};

// RenamedIn - the names in incoming/ that arrived by rename and had no write
// closed on them since, from the folder's inotify events: these were complete
// when they arrived (docs/jobs.md's way to drop a job) and need not wait out
// [intake] settle_time (queue::Arrival). Pure; the intake thread's memory.
class RenamedIn {
 public:
  // At most this many names are remembered; a name past it waits out the
  // settle time as any file does.
  static constexpr size_t kMaxNames = 65536;
  // Events - a buffer of struct inotify_event read from the watch:
  // IN_MOVED_TO adds its name, IN_CLOSE_WRITE removes it (written in place
  // since), IN_Q_OVERFLOW forgets every name (an event may have been lost).
  void Events(const char* buffer, size_t length);
  queue::Arrival ArrivalOf(const std::string& name) const {
    return names_.count(name) != 0 ? queue::Arrival::kRenamedIn : queue::Arrival::kUnknown;
  }
  void Forget(const std::string& name) { names_.erase(name); }
  // Retain - forget every name not in `present`.
  void Retain(const std::vector<std::string>& present);
  size_t size() const { return names_.size(); }

 private:
  std::set<std::string> names_;
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
  // Variables named in an accept line's "lacking variables" (the most lacked);
  // the rest are counted as "and N more".
  static constexpr size_t kMaxLackingLogged = 8;

 private:
  void Loop();
  // ReadEvents - every event waiting on the inotify descriptor, into
  // renamed_in_ (non-blocking; nothing without a watch).
  void ReadEvents();
  // ScanOnce - returns when the earliest file waiting out the settle time
  // will have settled (InfiniteFuture when none is).
  absl::Time ScanOnce();
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
  IncomingNotices notices_;
  RenamedIn renamed_in_;
  int inotify_fd_ = -1;  // the watch on incoming/; -1 when none could be set
  bool lease_warned_ = false;
  bool paused_ = false;
  absl::Time paused_since_;
  absl::Time last_reminder_;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_INTAKE_H_
